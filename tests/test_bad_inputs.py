"""Bad inputs through the real command: exit status 2, one line on stderr, no traceback, nothing written.

Every case is its own ``abswin-convert convert`` process with stderr captured at the file-descriptor level, so
warnings, C++ messages and tracebacks would show: most through a fork server that imports the CLI once (see
``cli_forkserver``), and the cases that need a fresh process (or prove the most) through the installed console
script itself. The corrupt files are variants of a real timm ``hiera_tiny_224`` (tiny dims) saved as safetensors.
"""

from __future__ import annotations

import ctypes
import datetime
import hashlib
import json
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy._core.multiarray import _reconstruct as np_reconstruct
from safetensors.torch import load_file, save_file

from tests import hiera_models as hm
from tests.cli_forkserver import cli_env

CLI = str(Path(sys.executable).with_name("abswin-convert"))
ERROR_PREFIX = "abswin-convert: error: "


class WouldRunCode:
    """Unpickling this calls ``open(marker, "w")``: the file appears if, and only if, the payload ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def raw_safetensors(path: Path) -> tuple[bytes, bytes]:
    """The JSON header text and the data section of a safetensors file."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return data[8 : 8 + length], data[8 + length :]


def write_raw(path: Path, header: bytes, body: bytes, length: int | None = None) -> None:
    header += b" " * (-len(header) % 8)
    path.write_bytes(struct.pack("<Q", len(header) if length is None else length) + header + body)


def with_pos_embed(folder: Path, base: Path, value: torch.Tensor) -> Path:
    state = load_file(base)
    state["pos_embed"] = value
    path = folder / "model.safetensors"
    save_file(state, path)
    return path


# Each case builds its input in folder ``d`` from the ``base`` checkpoint and returns (arguments after `convert`,
# what the one line must say).
Case = Callable[[Path, Path], tuple[list[str], str]]


def empty_file(d: Path, base: Path):
    (d / "model.safetensors").write_bytes(b"")
    return [str(d / "model.safetensors")], "the file is empty"


def text_file(d: Path, base: Path):
    (d / "weights.pth").write_text("these are not the weights you are looking for\n")
    return [str(d / "weights.pth")], "not a checkpoint"


def truncated_safetensors(d: Path, base: Path):
    data = base.read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    return [str(d / "model.safetensors")], "truncated or corrupt"


def header_lies_about_offsets(d: Path, base: Path):
    header, body = raw_safetensors(base)
    entries = json.loads(header)
    first = next(k for k in entries if k != "__metadata__")
    begin, end = entries[first]["data_offsets"]
    entries[first]["data_offsets"] = [begin + 8, end + 8]  # same size, shifted onto its neighbour
    write_raw(d / "model.safetensors", json.dumps(entries).encode(), body)
    return [str(d / "model.safetensors")], "offsets overlap or leave gaps"


def header_longer_than_file(d: Path, base: Path):
    header, body = raw_safetensors(base)
    write_raw(d / "model.safetensors", header, body, length=base.stat().st_size)
    return [str(d / "model.safetensors")], "header claims"


def duplicate_keys(d: Path, base: Path):
    header, body = raw_safetensors(base)
    entries = json.loads(header)
    spec = json.dumps(entries["pos_embed"]).encode()
    write_raw(d / "model.safetensors", b'{"pos_embed":' + spec + b"," + header.strip()[1:], body)
    return [str(d / "model.safetensors")], "names 'pos_embed' twice"


def pickle_that_runs_code(d: Path, base: Path):
    state = {k: v.numpy() for k, v in load_file(base).items()}
    with open(d / "model_final.pkl", "wb") as f:
        pickle.dump({"model": state, "payload": WouldRunCode(d / "PWNED")}, f)
    return [str(d / "model_final.pkl")], "refused to unpickle"


def torch_file_that_runs_code(d: Path, base: Path):
    torch.save({"model": load_file(base), "payload": WouldRunCode(d / "PWNED")}, d / "checkpoint.pth")
    return [str(d / "checkpoint.pth")], "refused to unpickle"


def pkl_with_foreign_object(d: Path, base: Path):
    state = {k: v.numpy() for k, v in load_file(base).items()}
    with open(d / "model_final.pkl", "wb") as f:
        pickle.dump({"model": {**state, "trained_on": datetime.date(2023, 4, 1)}}, f)
    return [str(d / "model_final.pkl")], "refused to unpickle datetime.date"


class CrashesNumpy:
    """numpy's own pickle form of an array, with a state that makes ``ndarray.__setstate__`` segfault."""

    def __reduce__(self):
        return (np_reconstruct, (np.ndarray, (0,), b"b"), (1, (1 << 28,), np.dtype("O"), False, [1]))


def pkl_whose_array_state_crashes_numpy(d: Path, base: Path):
    state = {k: v.numpy() for k, v in load_file(base).items()}
    with open(d / "model_final.pkl", "wb") as f:
        pickle.dump({"model": {**state, "pos_embed": CrashesNumpy()}}, f)
    return [str(d / "model_final.pkl")], "refused to unpickle numpy.dtype(|O)"


def pkl_with_object_array(d: Path, base: Path):
    state = {k: v.numpy() for k, v in load_file(base).items()}
    state["pos_embed"] = np.array(["not", "numbers"], dtype=object)
    with open(d / "model_final.pkl", "wb") as f:
        pickle.dump({"model": state}, f)
    return [str(d / "model_final.pkl")], "refused to unpickle numpy.dtype(|O)"


def nan_in_position(d: Path, base: Path):
    pos = load_file(base)["pos_embed"].clone()
    pos[0, 100, 3] = float("nan")
    return [str(with_pos_embed(d, base, pos))], "holds NaN or Inf"


def inf_in_position_torch(d: Path, base: Path):
    state = load_file(base)
    state["pos_embed"][0, 7, 0] = float("inf")
    torch.save(state, d / "model.pth")
    return [str(d / "model.pth")], "holds NaN or Inf"


def shape_fits_no_grid(d: Path, base: Path):
    return [str(with_pos_embed(d, base, torch.randn(1, 3000, 16)))], "do not form a square grid"


def grid_not_multiple_of_window(d: Path, base: Path):
    return [str(with_pos_embed(d, base, torch.randn(1, 60 * 60, 16)))], "not a whole number of Hiera's 8x8"


def img_size_not_multiple(d: Path, base: Path):
    shutil.copy(base, d / "model.safetensors")
    return [str(d / "model.safetensors"), "--img-size", "450"], "--img-size 450x450 is not a multiple of 32x32"


def unknown_family(d: Path, base: Path):
    save_file({"encoder.weight": torch.randn(8, 8), "encoder.bias": torch.randn(8)}, d / "model.safetensors")
    return [str(d / "model.safetensors")], "no position embedding recognised"


def output_is_input(d: Path, base: Path):
    shutil.copy(base, d / "model.safetensors")
    return [str(d / "model.safetensors"), "-o", str(d / "model.safetensors")], "is the input file"


def existing_output_without_force(d: Path, base: Path):
    shutil.copy(base, d / "model.safetensors")
    (d / "out.safetensors").write_bytes(b"somebody's precious weights")
    return [str(d / "model.safetensors"), "-o", str(d / "out.safetensors")], "already exists; pass --force"


def folder_without_weights(d: Path, base: Path):
    (d / "repo").mkdir()
    (d / "repo" / "config.json").write_text("{}")
    (d / "repo" / "README.md").write_text("# no weights here\n")
    return [str(d / "repo")], "no weight file found"


def unreadable_file(d: Path, base: Path):
    shutil.copy(base, d / "model.safetensors")
    (d / "model.safetensors").chmod(0)
    return [str(d / "model.safetensors")], "cannot read (Permission denied)"


def fifo_instead_of_file(d: Path, base: Path):
    os.mkfifo(d / "model.safetensors")  # opening it would block for ever: no writer will come
    return [str(d / "model.safetensors")], "not a regular file"


def truncated_torch_zip(d: Path, base: Path):
    torch.save(load_file(base), d / "model.pth")
    data = (d / "model.pth").read_bytes()
    (d / "model.pth").write_bytes(data[: len(data) * 2 // 3])
    return [str(d / "model.pth")], "not a readable torch file"


def torch_tensors_pickled_without_torch_save(d: Path, base: Path):
    with open(d / "model.pth", "wb") as f:
        pickle.dump(load_file(base), f, protocol=4)  # tensors rebuild through torch internals: refused
    return [str(d / "model.pth")], "refused to unpickle"


def torch_file_holding_a_list(d: Path, base: Path):
    torch.save([torch.zeros(3)], d / "model.pth")
    return [str(d / "model.pth")], "holds a list, not a state dict"


CASES: list[Case] = [
    empty_file, text_file, truncated_safetensors, header_lies_about_offsets, header_longer_than_file, duplicate_keys,
    pickle_that_runs_code, torch_file_that_runs_code, pkl_with_foreign_object, pkl_whose_array_state_crashes_numpy,
    pkl_with_object_array, nan_in_position,
    inf_in_position_torch, shape_fits_no_grid, grid_not_multiple_of_window, img_size_not_multiple, unknown_family,
    output_is_input, existing_output_without_force, folder_without_weights, unreadable_file, fifo_instead_of_file,
    truncated_torch_zip, torch_tensors_pickled_without_torch_save, torch_file_holding_a_list,
]


def without_file_permission_override() -> None:
    """In the child, before exec: drop the capabilities that let root read a mode-000 file.

    Tests run as root here, and root ignores file modes. Removing CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the
    bounding set makes the kernel apply the mode to this process as it would to any user.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop, cap_dac_override, cap_dac_read_search = 24, 1, 2
    for cap in (cap_dac_override, cap_dac_read_search):
        if libc.prctl(pr_capbset_drop, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under ``folder``: files by content hash, folders and pipes by kind."""
    seen = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        if path.is_fifo():
            seen[name] = "fifo"
        elif path.is_dir():
            seen[name] = "dir"
        else:
            seen[name] = hashlib.sha256(path.read_bytes()).hexdigest() if os.access(path, os.R_OK) else "unreadable"
    return seen


def run_console_script(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """The installed ``abswin-convert`` in a fresh process, as root without root's right to read any file."""
    drop = without_file_permission_override if os.geteuid() == 0 else None
    return subprocess.run(
        [CLI, "convert", *args], cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=300, preexec_fn=drop
    )


# A fresh process is needed to drop a capability; the code-running payloads deserve the real thing too.
IN_FRESH_PROCESS = {unreadable_file, pickle_that_runs_code, torch_file_that_runs_code}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A tiny real timm Hiera with a window-periodic embedding, saved once for every case to corrupt."""
    state = {k: v.contiguous() for k, v in hm.timm_model().state_dict().items()}
    state["pos_embed"] = hm.planted()
    path = tmp_path_factory.mktemp("base") / "model.safetensors"
    save_file(state, path)
    return path


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
def test_bad_input_gives_one_line_exit_2_and_writes_nothing(tmp_path, base, case, forkserver):
    args, expected = case(tmp_path, base)
    if "-o" not in args:
        args += ["-o", str(tmp_path / "out" / "model.safetensors")]
    if "--img-size" not in args:
        args += ["--img-size", "448"]
    before = snapshot(tmp_path)

    if case in IN_FRESH_PROCESS:
        result = run_console_script(args, tmp_path)
    else:
        result = forkserver.run(["convert", *args], tmp_path)

    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(ERROR_PREFIX) and expected in lines[0], lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert snapshot(tmp_path) == before  # no output, no temp file, inputs untouched
    assert not (tmp_path / "PWNED").exists()


def test_the_crashing_state_is_live(tmp_path, base):
    """The control: plain ``pickle.load`` of that file kills the interpreter with a segfault."""
    args, _ = pkl_whose_array_state_crashes_numpy(tmp_path, base)
    load = f"import pickle; pickle.load(open({args[0]!r}, 'rb'))"
    assert subprocess.run([sys.executable, "-c", load], capture_output=True).returncode == -signal.SIGSEGV


@pytest.mark.parametrize("case", [pickle_that_runs_code, torch_file_that_runs_code], ids=lambda c: c.__name__)
def test_the_refused_payloads_are_live(tmp_path, base, case):
    """The control: an ordinary unpickler does run these payloads, so their refusal above proved something."""
    args, _ = case(tmp_path, base)
    source = Path(args[0])
    if source.suffix == ".pkl":
        with open(source, "rb") as f:
            pickle.load(f)
    else:
        torch.load(source, weights_only=False)
    assert (tmp_path / "PWNED").exists()
