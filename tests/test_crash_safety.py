"""kill -9 at random moments: the destination is never a partial file, and the next run cleans up and finishes.

The source is a real tiny timm Hiera plus one large pass-through tensor (about 200 MB in all), so the write takes
long enough to be hit. Each run is the installed ``abswin-convert`` in its own process; the kill comes at a random
moment after the temp file appears (that is, while data is being copied, hashed, fsynced or renamed), or at a
random moment of the whole run.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from abswin_convert import convert
from abswin_convert.io.files import TEMP_MARK, remove_stale_temps
from tests import hiera_models as hm

CLI = str(Path(sys.executable).with_name("abswin-convert"))
PASS_THROUGH = 50_000_000  # float32 values: 200 MB copied raw


@pytest.fixture(scope="module")
def big_source(tmp_path_factory) -> Path:
    state = {k: v.contiguous() for k, v in hm.timm_model().state_dict().items()}
    state["pos_embed"] = hm.planted()
    state["aux.buffer"] = torch.randn(PASS_THROUGH, generator=torch.Generator().manual_seed(0))
    path = tmp_path_factory.mktemp("source") / "model.safetensors"
    save_file(state, path)
    return path


def convert_args(source: Path, dest: Path) -> list[str]:
    return [CLI, "convert", str(source), "-o", str(dest), "--img-size", "448", "--force"]


def temps_beside(dest: Path) -> list[Path]:
    """Temp files and staging folders: in the output folder, or beside it while the folder is new."""
    return sorted([*dest.parent.parent.glob(f"{TEMP_MARK}*"), *dest.parent.glob(f"{TEMP_MARK}*")])


def run_and_kill(args: list[str], dest: Path, rng: random.Random, *, at_first_temp: bool = False) -> str:
    """Start a conversion and SIGKILL it; when, and what state the kill found.

    A later run sweeps the temps a killed one left, so only ``at_first_temp`` (the kill comes as the temp appears,
    long before a 200 MB write can finish) is sure to leave one behind.
    """
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if at_first_temp or rng.random() < 0.75:  # mostly while writing: wait for the temp, then a slice of the write
        while not temps_beside(dest) and proc.poll() is None:
            time.sleep(0.002)
        time.sleep(0.0 if at_first_temp else rng.uniform(0.0, 0.4))
    else:
        time.sleep(rng.uniform(0.0, 8.0))
    finished = proc.poll() is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return "after it finished" if finished else ("while writing" if temps_beside(dest) else "before writing")


@pytest.mark.parametrize("name", ["model.safetensors", "model.pt"])  # the two streaming writers
def test_sigkill_never_leaves_a_partial_output_and_the_next_run_cleans_up(tmp_path, big_source, name):
    reference = tmp_path / "reference" / name
    convert(big_source, reference, 448)
    expected = reference.read_bytes()
    dest = tmp_path / "out" / name
    rng = random.Random(6)
    moments = []
    for _ in range(5):
        moments.append(run_and_kill(convert_args(big_source, dest), dest, rng))
        if dest.exists():  # a run that got to its rename wrote all of it
            assert dest.read_bytes() == expected
            dest.unlink()
    assert "while writing" in moments, moments  # at least one random kill hit a write in progress
    assert run_and_kill(convert_args(big_source, dest), dest, rng, at_first_temp=True) == "while writing"
    assert not dest.exists() and temps_beside(dest), "a killed writer leaves its temp file (and only that)"

    done = subprocess.run(convert_args(big_source, dest), capture_output=True, text=True)

    assert done.returncode == 0, done.stderr
    assert temps_beside(dest) == []
    assert dest.read_bytes() == expected
    weights = load_file(dest) if dest.suffix == ".safetensors" else torch.load(dest, weights_only=True)
    assert weights["aux.buffer"].shape == (PASS_THROUGH,)


def test_stale_temps_of_dead_writers_go_and_those_of_live_writers_stay(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"{TEMP_MARK}{int(dead.stdout)}-0a1b2c3d"
    stale_stage = tmp_path / f"{TEMP_MARK}{int(dead.stdout)}-4e5f6a7b"
    live = tmp_path / f"{TEMP_MARK}{os.getpid()}-0a1b2c3d"
    other = tmp_path / f".other.safetensors-{int(dead.stdout)}"
    for path in (stale, live, other):
        path.write_bytes(b"partial")
    stale_stage.mkdir()
    (stale_stage / "model.safetensors").write_bytes(b"partial")
    assert sorted(remove_stale_temps(tmp_path)) == sorted([stale, stale_stage])
    assert live.exists() and other.exists() and not stale.exists() and not stale_stage.exists()
