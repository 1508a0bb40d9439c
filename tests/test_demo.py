"""The README's main command, run as a user runs it: the installed console script."""

import json
import subprocess


def test_demo_runs_and_verifies(tmp_path):
    done = subprocess.run(["abswin-convert", "demo", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "verified       OK" in done.stdout
    assert (tmp_path / "timm-abswin" / "model.safetensors").exists()
    assert (tmp_path / "baked" / "model.safetensors").exists()


def test_demo_json_reports_exactness_and_pattern(tmp_path):
    done = subprocess.run(
        ["abswin-convert", "demo", "--json", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600
    )
    report = json.loads(done.stdout)
    assert report["ok"] is True
    assert report["native_max_abs_error"] < 1e-5
    assert report["logits_diff_native"] < 1e-4
    assert report["energy_abswin"] > report["energy_naive"]
