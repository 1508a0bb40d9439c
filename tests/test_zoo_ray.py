"""The zoo on a real local Ray cluster (2 CPUs, started once for this module): the same outputs, report and
resumability as the local executor, a Ray worker killed mid-output, and an entry the cluster cannot run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import ray
from click.testing import CliRunner

from abswin_convert.cli import main
from abswin_convert.io.files import TEMP_MARK
from abswin_convert.zoo import load_manifest, run_zoo
from abswin_convert.zoo.ray_executor import task_options
from tests import hiera_models as hm
from tests.test_zoo import CLI, ROOT, finished_outputs, leftovers

MANIFEST = """\
[defaults]
to = "timm-abswin"

[[model]]
source = "src/timm/hiera_timm.safetensors"
name = "timm"
img_size = [448, "256x512"]
hooks = [{name = "tests.zoo_hooks:weight_stats", key = "pos_embed_win"}]

[[model]]
source = "src/official"
name = "official"
to = "baked"
img_size = 448

[[model]]
source = "src/hiera_hf"
name = "hf"
to = "baked"
img_size = "448x320"
global_size = "28x28"

[[model]]
source = "src/broken.safetensors"
img_size = 448
"""
GOOD = {"timm-timm-abswin-448x448", "timm-timm-abswin-256x512", "official-baked-448x448", "hf-baked-448x320"}
BROKEN = "broken-timm-abswin-448x448"
WHERE = ("seconds", "executor", "host", "node", "attempts")  # what may differ between two executors' rows


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster for the whole module; its address, for a zoo command run as another process."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture
def zoo(tmp_path) -> Path:
    src = tmp_path / "src"
    for name in ("timm", "official"):
        (src / name).mkdir(parents=True)
    hm.save_timm(src / "timm")
    hm.save_official(src / "official")
    hm.save_transformers(src)
    (src / "broken.safetensors").write_bytes(b"\x00" * 64)
    manifest = tmp_path / "zoo.toml"
    manifest.write_text(MANIFEST)
    return manifest


def files_of(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_ray_writes_what_the_local_executor_writes_and_a_rerun_resumes(ray_cluster, zoo, tmp_path):
    local = run_zoo(load_manifest(zoo, tmp_path / "local"), jobs=2)
    on_ray = run_zoo(load_manifest(zoo, tmp_path / "ray"), jobs=2, executor="ray")

    # the outputs are the same bytes, provenance included; the reports differ only in where and how long
    local_files, ray_files = files_of(tmp_path / "local"), files_of(tmp_path / "ray")
    reports = {"report.json", "report.md"}
    assert set(local_files) == set(ray_files) and {f.split("/")[0] for f in ray_files} == GOOD | reports
    assert all(local_files[name] == ray_files[name] for name in set(ray_files) - reports)
    rows = [{k: v for k, v in row.to_json().items() if k not in WHERE} for row in on_ray.rows]
    assert rows == [{k: v for k, v in row.to_json().items() if k not in WHERE} for row in local.rows]
    assert {row.output: row.status for row in on_ray.rows} == {**dict.fromkeys(GOOD, "converted"), BROKEN: "failed"}
    nodes = {node["NodeID"] for node in ray.nodes()}
    for row in on_ray.rows:
        assert (row.executor, row.host, row.attempts) == ("ray", socket.gethostname(), 1) and row.node in nodes
    assert all((row.executor, row.node) == ("local", None) for row in local.rows)
    assert json.loads((tmp_path / "ray" / "report.json").read_text()) == on_ray.to_json()
    markdown = (tmp_path / "ray" / "report.md").read_text()
    assert f"| ray on {socket.gethostname()} (node {on_ray.rows[0].node[:8]}) |" in markdown
    assert "5 outputs: 4 converted, 1 failed." in markdown

    # resumable: a lost output and a killed run's staging folder; the rerun builds only what is missing
    out = tmp_path / "ray"
    os.rename(out / "official-baked-448x448", out / f"{TEMP_MARK}0badc0de-1-0a1b2c3d")  # a lost worker's, anywhere
    again = run_zoo(load_manifest(zoo, out), jobs=2, executor="ray")
    expected = {**dict.fromkeys(GOOD, "skipped"), "official-baked-448x448": "converted", BROKEN: "failed"}
    assert {row.output: row.status for row in again.rows} == expected
    assert leftovers(out) == [] and files_of(out).keys() == ray_files.keys()


def test_a_killed_worker_is_retried_once_then_reported_failed_and_the_rest_finish(ray_cluster, zoo, tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    victim = f'source = "src/timm/hiera_timm.safetensors"\nname = "victim"\nimg_size = 448\n' \
             f'hooks = [{{name = "tests.zoo_hooks:pid_then_sleep", pids = "{pids}"}}]\n'
    zoo.write_text(zoo.read_text().replace('source = "src/broken.safetensors"\nimg_size = 448\n', victim))
    command = [str(CLI), "zoo", str(zoo), "--executor", "ray", "--ray-address", ray_cluster, "--jobs", "2", "--json"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    killed = []
    for _ in range(2):  # the first attempt, then its one retry
        deadline = time.monotonic() + 120
        while not set(os.listdir(pids)) - set(killed) and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        [pid] = set(os.listdir(pids)) - set(killed)
        os.kill(int(pid), signal.SIGKILL)
        killed.append(pid)

    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 1, stderr
    rows = {row["output"]: row for row in json.loads(stdout)["outputs"]}
    lost = rows.pop("victim-timm-abswin-448x448")
    assert (lost["status"], lost["attempts"], lost["host"]) == ("failed", 2, None)
    assert lost["error"].startswith("the Ray task failed 2 times; last: WorkerCrashedError")
    assert {name: row["status"] for name, row in rows.items()} == dict.fromkeys(GOOD, "converted")
    assert len(killed) == 2 and len(os.listdir(pids)) == 2  # retried once, not more
    out = tmp_path / "converted"
    assert finished_outputs(out) == GOOD and leftovers(out) == []  # nothing partial of the victim


def test_an_entry_the_cluster_cannot_run_fails_in_its_row_without_a_task(ray_cluster, tmp_path):
    manifest = tmp_path / "zoo.toml"
    manifest.write_text('[[model]]\nsource = "a/b"\nimg_size = 448\nresources = {num_gpus = 1, num_cpus = 1}\n')
    [row] = run_zoo(load_manifest(manifest), dry_run=True, executor="ray").rows
    assert (row.status, row.attempts) == ("failed", 0)
    assert row.error == "asks for num_gpus = 1 but the Ray cluster has 0"


def test_an_address_nobody_answers_on_is_one_line_at_once(zoo):
    result = CliRunner().invoke(main, ["zoo", str(zoo), "--executor", "ray", "--ray-address", "127.0.0.1:1"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "no Ray cluster answers at 127.0.0.1:1" in result.stderr
    assert not (zoo.parent / "converted").exists()


def test_what_a_task_asks_ray_for(tmp_path):
    def job(text: str):
        (tmp_path / "zoo.toml").write_text(f'[[model]]\nsource = "a/b"\nimg_size = 448\n{text}')
        return load_manifest(tmp_path / "zoo.toml").outputs[0]

    gpus, cpus = {"CPU": 16.0, "GPU": 2.0, "memory": 1e11, "big_disk": 1.0}, {"CPU": 2.0}
    assert task_options(job(""), gpus) == ({}, None)  # a conversion: Ray's default, one CPU
    assert task_options(job('hooks = ["eval"]'), gpus) == ({"num_gpus": 1}, None)
    assert task_options(job('hooks = ["eval"]'), cpus) == ({}, None)  # no GPU anywhere: eval runs on CPU
    assert task_options(job('hooks = ["finetune"]\nresources = {num_gpus = 0, num_cpus = 4}'), gpus) == (
        {"num_gpus": 0, "num_cpus": 4}, None
    )
    assert task_options(job("resources = {big_disk = 1, memory = 4e9}"), gpus) == (
        {"memory": 4e9, "resources": {"big_disk": 1}}, None
    )
    assert task_options(job("resources = {num_cpus = 4}"), cpus)[1] == "asks for num_cpus = 4 but the Ray cluster has 2"
