"""The zoo: a manifest of conversions against the local hub, interrupted with SIGKILL and run again."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from huggingface_hub import hf_hub_download

from abswin_convert.cli import main
from abswin_convert.io.outputs import read_output
from abswin_convert.zoo import load_manifest, run_zoo
from abswin_convert.zoo import output as zoo_output
from tests import hiera_models as hm

ROOT = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).with_name("abswin-convert")  # the console script of this environment

HUB_MANIFEST = """\
[defaults]
out = "zoo-out"

[[model]]
source = "test-org/timm@main"
img_size = [448, 512]
to = "timm-abswin"
push_to = "test-org/timm-abswin-{size}"
hooks = ["tests.zoo_hooks:weight_stats"]

[[model]]
source = "test-org/official"
img_size = 448
hooks = [{name = "tests.zoo_hooks:pause", seconds = 2}]

[[model]]
source = "hf://test-org/hf@main/model.safetensors"
name = "hf"
img_size = "448x320"
global_size = "28x28"

[[model]]
source = "test-org/broken"
img_size = 448
"""
GOOD = {"timm-timm-abswin-448x448", "timm-timm-abswin-512x512", "official-baked-448x448", "hf-baked-448x320"}
BROKEN = "broken-baked-448x448"


def upload_zoo_sources(local_hub, root: Path) -> None:
    folders = {name: root / name for name in ("timm", "official", "broken")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    hm.save_timm(folders["timm"])
    hm.save_official(folders["official"])
    (folders["broken"] / "model.safetensors").write_bytes(b"\x00" * 64)
    _, folders["hf"] = hm.save_transformers(root)
    for name, folder in folders.items():
        local_hub.upload_folder(f"test-org/{name}", folder)


def zoo_process(manifest: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # HF_ENDPOINT, HF_TOKEN, HF_HOME: set by local_hub
    command = [str(CLI), "zoo", str(manifest), "--jobs", "2", "--json"]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished_outputs(out: Path) -> set[str]:
    return {p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")} if out.exists() else set()


def leftovers(out: Path) -> list[Path]:
    """Anything a half-done write leaves: hidden staging folders, writer temp files."""
    return [p for p in out.rglob("*") if p.name.startswith(".") or "abswin-tmp" in p.name]


def test_zoo_killed_midway_then_rerun_finishes_only_what_is_missing(local_hub, tmp_path):
    upload_zoo_sources(local_hub, tmp_path / "sources")
    manifest = tmp_path / "zoo.toml"
    manifest.write_text(HUB_MANIFEST)
    out = tmp_path / "zoo-out"

    first = zoo_process(manifest)
    deadline = time.monotonic() + 120
    while not finished_outputs(out) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL, "the run ended before it could be interrupted"
    done_before = finished_outputs(out)
    assert done_before and done_before < GOOD  # interrupted partway
    for name in done_before:  # what is there is whole: weights with their provenance
        assert read_output(out / name).provenance.entries()["img_size"] in name

    second = zoo_process(manifest)
    stdout, stderr = second.communicate(timeout=300)
    assert second.returncode == 1, stderr  # the broken entry fails the run, after all the others ran
    report = json.loads(stdout)
    rows = {row["output"]: row for row in report["outputs"]}
    assert set(rows) == GOOD | {BROKEN}
    for name in GOOD:
        assert rows[name]["status"] == ("skipped" if name in done_before else "converted"), rows[name]
        assert rows[name]["error"] is None and rows[name]["window_energy"] > 0.5
    assert rows[BROKEN]["status"] == "failed"
    assert "hf://test-org/broken@" in rows[BROKEN]["error"] and "not a checkpoint" in rows[BROKEN]["error"]

    # every good output exactly once, the two reports, and nothing partial anywhere
    assert sorted(p.name for p in out.iterdir()) == sorted(GOOD | {"report.json", "report.md"})
    assert leftovers(out) == []
    assert json.loads((out / "report.json").read_text())["outputs"] == report["outputs"]
    markdown = (out / "report.md").read_text()
    broken_line = next(line for line in markdown.splitlines() if BROKEN in line)
    assert "| failed |" in broken_line and "not a checkpoint" in broken_line
    skipped = len(done_before)
    counts = f"{4 - skipped} converted, 1 failed" + (f", {skipped} skipped" if skipped else "")
    assert f"5 outputs: {counts}." in markdown

    # hooks ran on the timm outputs and their metrics are in the report and in the pushed card
    for size in ("448x448", "512x512"):
        row = rows[f"timm-timm-abswin-{size}"]
        stats = row["hooks"]["tests.zoo_hooks:weight_stats"]
        assert stats["tensors"] == len(hm.timm_model().state_dict()) + 1  # + pos_embed_win
        repo = f"test-org/timm-abswin-{size}"
        assert local_hub.commit_count(repo) == 1 and len(row["pushed"]) == 40
        assert "tests.zoo_hooks:weight_stats" in (out / row["output"] / "abswin-hooks.json").read_text()
        card = Path(hf_hub_download(repo, "README.md", revision=row["pushed"])).read_text()
        assert f"| tests.zoo_hooks:weight_stats | tensors | {stats['tensors']} |" in card
        assert f"| target input | `{size}` |" in card

    # a third run has nothing left to do but the broken entry, and pushes nothing new
    third = run_zoo(load_manifest(manifest), jobs=2)
    assert {row.output: row.status for row in third.rows} == {**{n: "skipped" for n in GOOD}, BROKEN: "failed"}
    assert all(local_hub.commit_count(f"test-org/timm-abswin-{s}") == 1 for s in ("448x448", "512x512"))


def test_a_hub_source_is_checked_by_the_hubs_sha256_and_a_changed_one_rebuilds(local_hub, tmp_path, monkeypatch):
    (tmp_path / "hub").mkdir()
    (tmp_path / "src").mkdir()
    _, uploaded = hm.save_timm(tmp_path / "hub")
    _, local = hm.save_timm(tmp_path / "src")
    local_hub.upload_folder("test-org/timm", tmp_path / "hub")
    manifest = tmp_path / "zoo.toml"
    manifest.write_text(
        '[[model]]\nsource = "test-org/timm@main"\nname = "hub"\nimg_size = 448\n\n'
        '[[model]]\nsource = "src/hiera_timm.safetensors"\nname = "local"\nimg_size = 448\n'
    )
    assert [row.status for row in run_zoo(load_manifest(manifest)).rows] == ["converted", "converted"]

    hashed: list[Path] = []
    sha256_of = zoo_output.sha256_of

    def local_files_only(path: Path) -> str:  # the Hub gave the sha256 of its file: hashing it again is waste
        if path.resolve() != local.resolve():
            raise AssertionError(f"hashed {path}")
        hashed.append(path)
        return sha256_of(path)

    monkeypatch.setattr(zoo_output, "sha256_of", local_files_only)
    again = run_zoo(load_manifest(manifest))
    assert [(row.status, row.error) for row in again.rows] == [("skipped", None), ("skipped", None)]
    assert len(hashed) == 1  # the local file is still hashed

    # the Hub file changes (the same size, one weight changed): its sha256 changes, so the output is rebuilt
    data = bytearray(uploaded.read_bytes())
    data[-4:] = bytes(4 - i for i in range(4))
    uploaded.write_bytes(data)
    local_hub.upload_folder("test-org/timm", tmp_path / "hub")
    rebuilt = run_zoo(load_manifest(manifest))
    assert [(row.status, row.error) for row in rebuilt.rows] == [("converted", None), ("skipped", None)]
    recorded = read_output(tmp_path / "converted" / rebuilt.rows[0].output).provenance.entries()["source_sha256"]
    assert recorded == hashlib.sha256(data).hexdigest()


LOCAL_MANIFEST = """\
[defaults]
to = "timm-abswin"

[[model]]
source = "src/hiera_timm.safetensors"
name = "fails"
img_size = 448
hooks = ["tests.zoo_hooks:always_fails"]

[[model]]
source = "src/hiera_timm.safetensors"
name = "tiny"
img_size = [448, "256x512"]
global_size = "{global_size}"
hooks = [{{name = "tests.zoo_hooks:weight_stats", key = "pos_embed_win"}}]
"""


@pytest.fixture
def local_manifest(tmp_path):
    (tmp_path / "src").mkdir()
    hm.save_timm(tmp_path / "src")

    def write(global_size: str = "full") -> Path:
        path = tmp_path / "zoo.toml"
        path.write_text(LOCAL_MANIFEST.format(global_size=global_size))
        return path

    return write


def test_failed_hook_keeps_the_output_out_and_changed_options_rebuild(local_manifest, tmp_path):
    out = tmp_path / "converted"
    first = run_zoo(load_manifest(local_manifest()), jobs=2)
    status = {row.output: row.status for row in first.rows}
    assert status == {"fails-timm-abswin-448x448": "failed", "tiny-timm-abswin-448x448": "converted",
                      "tiny-timm-abswin-256x512": "converted"}
    failed = first.rows[0]
    assert "hook tests.zoo_hooks:always_fails" in failed.error and "planned failure" in failed.error
    assert not (out / "fails-timm-abswin-448x448").exists() and leftovers(out) == []
    tiny = read_output(out / "tiny-timm-abswin-256x512")
    assert tiny.provenance.entries()["global_size"] == "56x56" and tiny.hooks["tests.zoo_hooks:weight_stats"]["tensors"] > 0

    # another global size: both tiny outputs are rebuilt
    refit = run_zoo(load_manifest(local_manifest("28x28")), jobs=1)
    assert [row.status for row in refit.rows[1:]] == ["converted", "converted"]
    assert read_output(out / "tiny-timm-abswin-256x512").provenance.entries()["global_size"] == "28x28"
    again = run_zoo(load_manifest(local_manifest("28x28")), jobs=1)
    assert [row.status for row in again.rows[1:]] == ["skipped", "skipped"]
    assert sorted(p.name for p in out.iterdir()) == [
        "report.json", "report.md", "tiny-timm-abswin-256x512", "tiny-timm-abswin-448x448"
    ]


def test_dry_run_writes_nothing_and_says_what_is_up_to_date(local_manifest, tmp_path):
    manifest = local_manifest()
    result = CliRunner().invoke(main, ["zoo", str(manifest), "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    assert {row["status"] for row in json.loads(result.stdout)["outputs"]} == {"would convert"}
    assert not (tmp_path / "converted").exists()
    run_zoo(load_manifest(manifest))
    planned = json.loads(CliRunner().invoke(main, ["zoo", str(manifest), "--dry-run", "--json"]).stdout)
    assert [row["status"] for row in planned["outputs"]] == ["would convert", "up to date", "up to date"]


def test_dry_run_fails_a_source_it_cannot_read(tmp_path):
    manifest = tmp_path / "zoo.toml"
    manifest.write_text('[[model]]\nsource = "gone.pt"\nimg_size = 448\n')
    result = CliRunner().invoke(main, ["zoo", str(manifest), "--dry-run"])
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0] == "failed        gone-baked-448x448: gone.pt: no such file or folder"


def test_out_option_and_text_output(local_manifest, tmp_path):
    result = CliRunner().invoke(main, ["zoo", str(local_manifest()), "--output", str(tmp_path / "elsewhere")])
    assert result.exit_code == 1  # the entry whose hook fails
    assert result.stdout.splitlines()[-1] == (
        f"3 outputs: 2 converted, 1 failed (report in {tmp_path / 'elsewhere'}/report.md)"
    )
    assert (tmp_path / "elsewhere" / "report.md").is_file() and not (tmp_path / "converted").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[model]]\nsource = "a/b"\nimg_size = 448\nto = "nope"\n', "target = 'nope'; use one of baked"),
        ('[[model]]\nsource = "a/b"\nimg_size = 448\ntarget = "nope"\n', "target = 'nope'; use one of baked"),
        ('[[model]]\nsource = "a/b"\nimg_size = 448\ntarget = "baked"\nto = "baked"\n', "has both target and to"),
        ('[[model]]\nsource = "a/b"\nimg_sise = 448\n', "unknown key(s) img_sise"),
        ('[[model]]\nsource = "a/b"\n', "has no img_size"),
        ('[defaults]\nto = "baked"\n', "no [[model]] entries"),
        ('[[model]]\nsource = "a/b"\nimg_size = [448, 512]\npush_to = "o/x"\n', "put {size} in push_to"),
        ('[[model]]\nsource = "a/b"\nimg_size = 448\n[[model]]\nsource = "c/b"\nimg_size = 448\n', "share the output"),
        ('[[model]\n', "not valid TOML"),
        ('[[model]]\nsource = "a/b"\nimg_size = 448\nhooks = [3]\n', "hook 3 is neither"),
        # everything is checked when the manifest loads, before any work
        ('[[model]]\nsource = "a/b"\nimg_size = [448, 512]\npush_to = "o/x_{sizes}"\n',
         "[[model]] #1: push_to 'o/x_{sizes}' has {sizes}; the placeholders are {size}, {target}, {name}"),
        ('[[model]]\nsource = "a/b"\nimg_size = 448\npush_to = "o/x_{size!r}"\n', "the placeholders are {size}"),
        ('[[model]]\nsource = "a/b"\nimg_size = 448\npush_to = "o/x_{size"\n', "is not a valid template"),
        ('[[model]]\nsource = "a/b"\nimg_size = 448\npush_to = "{name}"\n', "push_to gives 'b', not a Hub repo id"),
        ('[[model]]\nsource = "a/b"\nimg_size = 448\nformat = "onnx"\n', "format = 'onnx'; use one of safetensors"),
        ('[[model]]\nsource = "a/b"\nimg_size = [448, 0]\n', "#1: img_size: cannot read size '0'"),
        ('[[model]]\nsource = "a/b"\nimg_size = "448x"\n', "#1: img_size: cannot read size '448x'"),
        ('[[model]]\nsource = "a/b"\nimg_size = 448\nglobal_size = "huge"\n', "global_size: cannot read size"),
        ('[[model]]\nsource = "a/b"\nimg_size = 448\nhooks = ["verfy"]\n', "unknown hook 'verfy'"),
        ('[[model]]\nsource = "a/b"\nimg_size = 448\nhooks = ["pkg.mod:"]\n', "unknown hook 'pkg.mod:'"),
        ('[[model]]\nsource = "a/b"\nimg_size = 448\nfamily = "vit"\n', "family = 'vit'; use one of hiera"),
        ('[[model]]\nsource = "a/b"\nimg_size = 448\nlayout = "hwc"\n', "layout = 'hwc'; use one of flat"),
        ('[[model]]\nsource = "a/b"\nimg_size = 448\nwindow = "7x"\n', "#1: window: cannot read size"),
        ('[[model]]\nsource = "a/b"\nimg_size = 448\npatch_stride = 0\n', "patch_stride must be a positive"),
        ('[[model]]\nsource = "a/b"\nimg_size = 448\nrecipe = "stretch"\n', "recipe = 'stretch'; the one recipe is 'tile'"),
        ('[[model]]\nsource = "a/b"\nimg_size = 448\nresources = {num_gpus = "1"}\n', "resources.num_gpus must be"),
        ('[[model]]\nsource = "a/b"\nimg_size = 448\nresources = {GPU = 1}\n', "resources.GPU: write num_gpus"),
        ('[[model]]\nsource = "a/b"\nimg_size = 448\nprivate = "yes"\n', "private must be true or false"),
    ],
)
def test_bad_manifests_are_refused_in_one_line(tmp_path, text, message):
    manifest = tmp_path / "zoo.toml"
    manifest.write_text(text)
    result = CliRunner().invoke(main, ["zoo", str(manifest)])
    assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "converted").exists()


def test_manifest_paths_are_relative_to_the_manifest(local_manifest, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path / "src")  # neither the source nor `out` depends on the working folder
    manifest = load_manifest(local_manifest())
    assert manifest.out == tmp_path / "converted"
    jobs = manifest.outputs
    assert {job.location for job in jobs} == {str(tmp_path / "src" / "hiera_timm.safetensors")}
    assert {job.source for job in jobs} == {"src/hiera_timm.safetensors"}  # the report shows it as written
    assert [job.folder.name for job in jobs] == [
        "fails-timm-abswin-448x448", "tiny-timm-abswin-448x448", "tiny-timm-abswin-256x512"
    ]


def test_a_hook_that_says_not_ok_fails_the_output_which_is_neither_installed_nor_pushed(local_hub, tmp_path):
    (tmp_path / "src").mkdir()
    hm.save_timm(tmp_path / "src")
    manifest = tmp_path / "zoo.toml"
    manifest.write_text(
        '[[model]]\nsource = "src/hiera_timm.safetensors"\nname = "checked"\nimg_size = 448\n'
        'push_to = "test-org/checked"\nhooks = ["tests.zoo_hooks:weight_stats",\n'
        '  {name = "tests.zoo_hooks:not_ok", problem = "not verified:\\n no config"}]\n'
    )
    [row] = run_zoo(load_manifest(manifest)).rows
    assert row.status == "failed" and row.pushed is None
    assert row.error == "hook tests.zoo_hooks:not_ok failed: not verified: no config"
    out = tmp_path / "converted"
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.md"] and leftovers(out) == []
    assert not any("checked" in path for _, path in local_hub.requests)


def test_manifest_overrides_reach_convert_and_a_changed_one_rebuilds(tmp_path):
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, patch_size=16)
    ViTModel(config).save_pretrained(tmp_path / "vit")  # a family we do not know: only the overrides can read it
    manifest = tmp_path / "zoo.toml"
    entry = '[[model]]\nsource = "vit"\nimg_size = 448\nkey = "embeddings.position_embeddings"\nlayout = "flat_cls"\n'
    manifest.write_text(entry + "window = 7\npatch_stride = 16\n")
    [row] = run_zoo(load_manifest(manifest)).rows
    assert row.status == "converted", row.error
    output = tmp_path / "converted" / "vit-baked-448x448"
    provenance = read_output(output).provenance.entries()
    assert provenance["family"] == "generic" and provenance["window"] == "7x7"
    options = json.loads(provenance["zoo_options"])
    assert (options["key"], options["layout"], options["window"], options["patch_stride"]) == (
        "embeddings.position_embeddings", "flat_cls", "7x7", 16
    )
    assert [r.status for r in run_zoo(load_manifest(manifest)).rows] == ["skipped"]
    manifest.write_text(entry + "window = 2\npatch_stride = 16\n")  # another window: the output is rebuilt
    assert [r.status for r in run_zoo(load_manifest(manifest)).rows] == ["converted"]
    assert read_output(output).provenance.entries()["window"] == "2x2"


def test_a_plain_vit_is_refused_in_its_row_unless_the_entry_asks_for_the_recipe(tmp_path):
    from safetensors.torch import save_file

    from tests.real_world_checkpoints import cifar_vit

    save_file({k: v.contiguous() for k, v in cifar_vit().state_dict().items()}, tmp_path / "vit.safetensors")
    manifest = tmp_path / "zoo.toml"
    manifest.write_text('[[model]]\nsource = "vit.safetensors"\nimg_size = 64\n')
    [refused] = run_zoo(load_manifest(manifest)).rows
    assert refused.status == "failed" and "--recipe tile" in refused.error
    manifest.write_text('[[model]]\nsource = "vit.safetensors"\nimg_size = 64\nrecipe = "tile"\n')
    [row] = run_zoo(load_manifest(manifest)).rows
    assert row.status == "converted", row.error
    assert json.loads(read_output(tmp_path / "converted" / row.output).provenance.entries()["zoo_options"])["recipe"] == "tile"


def test_help_and_the_local_executor_do_not_import_ray(tmp_path):
    manifest = tmp_path / "zoo.toml"
    manifest.write_text('[[model]]\nsource = "gone.pt"\nimg_size = 448\n')
    script = (
        "import sys\nfrom click.testing import CliRunner\nfrom abswin_convert.cli import main\n"
        f"assert CliRunner().invoke(main, ['--help']).exit_code == 0\n"
        f"assert CliRunner().invoke(main, ['zoo', {str(manifest)!r}]).exit_code == 1\n"
        "print('ray' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "False", result.stderr


def test_outputs_name_hook_files_and_data_by_name_not_by_local_path(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    hm.save_timm(folder)
    data = f"imagefolder:{tmp_path / 'private' / 'pets'}"
    manifest = tmp_path / "zoo.toml"
    manifest.write_text(
        '[[model]]\nsource = "src/hiera_timm.safetensors"\nimg_size = 448\n'
        f'hooks = [{{name = "tests.zoo_hooks:names_files", data = "{data}"}}]\n'
    )
    [row] = run_zoo(load_manifest(manifest)).rows
    assert row.status == "converted", row.error
    output = read_output(tmp_path / "converted" / row.output)
    assert output.hooks["tests.zoo_hooks:names_files"] == {"checkpoint": "model.safetensors", "data": "imagefolder:pets",
                                                            "top1": 0.5}
    written = output.weights.read_bytes()[:200_000] + output.hooks_file.read_bytes()
    assert str(tmp_path).encode() not in written


def test_on_a_terminal_the_zoo_shows_each_output_start_and_end(local_manifest, tmp_path):
    leader, follower = pty.openpty()  # stderr on a terminal: the bar and the per-output lines are shown there
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24 x 100: room for the bar
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([str(CLI), "zoo", str(local_manifest())], stdout=subprocess.PIPE, stderr=follower,
                          env=env, timeout=300)
    os.close(follower)
    shown = b""
    while chunk := _read_available(leader):
        shown += chunk
    os.close(leader)
    assert done.returncode == 1  # the entry whose hook fails
    text = shown.decode(errors="replace")
    for name in ("fails-timm-abswin-448x448", "tiny-timm-abswin-448x448", "tiny-timm-abswin-256x512"):
        assert f"  start     {name}" in text
    assert "  converted tiny-timm-abswin-256x512" in text and "  failed    fails-timm-abswin-448x448" in text
    assert "zoo: 100%" in text and "| 3/3 " in text


def _read_available(fd: int) -> bytes:
    """What a pty holds now; b"" once it is drained (a closed pty's reader gets EIO)."""
    if not select.select([fd], [], [], 0.5)[0]:
        return b""
    try:
        return os.read(fd, 65536)
    except OSError:
        return b""


def test_a_local_zoo_runs_blas_on_one_thread_and_gives_the_setting_back(tmp_path):
    from threadpoolctl import threadpool_info, threadpool_limits

    (tmp_path / "src").mkdir()
    hm.save_timm(tmp_path / "src")
    manifest = tmp_path / "zoo.toml"
    manifest.write_text('[[model]]\nsource = "src/hiera_timm.safetensors"\nimg_size = 448\n'
                        'hooks = ["tests.zoo_hooks:blas_threads"]\n')
    with threadpool_limits(2, user_api="blas"):  # what the process had before the run, whatever the machine
        before = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
        rows = run_zoo(load_manifest(manifest), jobs=2).rows
        after = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    assert before and set(before) == {2} and after == before
    assert rows[0].status == "converted" and set(rows[0].hooks["tests.zoo_hooks:blas_threads"]["blas_threads"]) == {1}
