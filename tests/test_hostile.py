"""Hostile files and unlucky conditions, each through ``abswin-convert`` in its own process: through the fork server
(``cli_forkserver``: one import, a fork per run) where that proves the same, through the installed console script
where the process itself matters (signals, start-up, file size limits, two writers at once).

Every case asserts the exit status, exactly one line on stderr, that no file under the work folder changed (by
hash) and no temp file or staging folder is left, and, for files that claim huge sizes, the child's peak RSS (from
``os.wait4``) against the stated bound: the baseline of a run on the same small example plus ``SLACK``.
The hostile files are small on disk; the point is that they CLAIM gigabytes.
"""

from __future__ import annotations

import hashlib
import io
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from abswin_convert.demo import example_path
from abswin_convert.errors import AbswinError
from abswin_convert.io.files import TEMP_MARK
from abswin_convert.io.staging import LOCK_MARK, locked
from tests import hiera_models as hm
from tests.cli_forkserver import ForkServer, cli_env

CLI = str(Path(sys.executable).with_name("abswin-convert"))
EXAMPLE = Path(__file__).parents[1] / "abswin_convert" / "examples" / "hiera_tiny"
ERROR = "abswin-convert: error: "
SLACK = 300 * 1024**2  # what a refused file may cost over a plain run: far below the gigabytes it claims


@dataclass
class Run:
    status: int
    stderr: str
    peak_rss: int  # bytes


def run_cli(args: list[str], cwd: Path, *, send: int | None = None, when: Path | float | None = None,
            preexec=None, env: dict[str, str] | None = None) -> Run:
    """``abswin-convert ARGS`` in ``cwd``; with ``send``, that signal once ``when`` (a path) exists or after
    ``when`` seconds. The peak RSS is the child's own, from ``wait4``."""
    err_path = cwd.parent / f"stderr-{cwd.name}-{time.monotonic_ns()}"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen([CLI, *args], cwd=cwd, stdout=subprocess.DEVNULL, stderr=err, env={**cli_env(), **(env or {})},
                                preexec_fn=preexec)
        if send is not None:
            _wait_for(proc, when)
            os.kill(proc.pid, send)  # not proc.send_signal: it would reap an exited child before wait4 reads its usage
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = err_path.read_text(errors="replace")
    err_path.unlink()
    return Run(proc.returncode, stderr, usage.ru_maxrss * 1024)


def _wait_for(proc: subprocess.Popen, when: Path | float | None) -> None:
    """Until a temp file or staging folder appears under ``when`` (a path), or until the CLI module has installed
    its signal handlers and then ``when`` seconds more."""
    deadline = time.monotonic() + 60
    if isinstance(when, Path):
        while not any(when.glob(f"**/{TEMP_MARK}*")) and _running(proc) and time.monotonic() < deadline:
            time.sleep(0.001)
        return
    while not _catches(proc.pid, signal.SIGTERM) and _running(proc) and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(when or 0)


def _running(proc: subprocess.Popen) -> bool:
    """Whether the child still runs; unlike ``poll`` it leaves an exited child to ``wait4`` (for its peak RSS)."""
    return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None


def _catches(pid: int, signum: int) -> bool:
    """Whether the process has a handler for ``signum`` (``SigCgt`` in /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next((line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), "0")
    return bool(int(caught, 16) >> (signum - 1) & 1)


def run_forked(server: ForkServer, args: list[str], cwd: Path) -> Run:
    result = server.run(args, cwd)
    return Run(result.returncode, result.stderr, result.peak_rss)


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
        for p in sorted(folder.rglob("*"))
    }


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith((TEMP_MARK, LOCK_MARK))]


def assert_refused(run: Run, expected: str, code: int = 2) -> str:
    lines = run.stderr.splitlines()
    assert run.status == code, run.stderr
    assert len(lines) == 1 and lines[0].startswith(ERROR), run.stderr
    assert expected in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, forkserver) -> int:
    """Peak RSS of converting the small example: the interpreter, torch and the libraries."""
    work = tmp_path_factory.mktemp("baseline")
    run = run_forked(forkserver, ["convert", str(EXAMPLE), "-o", "out", "--img-size", "448"], work)
    assert run.status == 0, run.stderr
    return run.peak_rss


@pytest.fixture
def work(tmp_path) -> Path:
    folder = tmp_path / "work"
    shutil.copytree(EXAMPLE, folder / "model")
    return folder


def timm_state() -> dict[str, torch.Tensor]:
    return load_file(EXAMPLE / "model.safetensors")


def torch_zip(path: Path, state: dict, recompress: set[str] = frozenset()) -> Path:
    """``torch.save``, then the members named (by suffix) rewritten DEFLATED, as a hostile archiver would."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with zipfile.ZipFile(buffer) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            kind = zipfile.ZIP_DEFLATED if info.filename.endswith(tuple(recompress)) else zipfile.ZIP_STORED
            dst.writestr(info.filename, src.read(info.filename), compress_type=kind)
    return path


# --- memory: what a file or an option claims is refused before it is allocated --------------------------------

def expanded(work: Path) -> list[str]:
    state = {**timm_state(), "aux": torch.zeros(1).expand(2**28)}  # 1 GiB logically, 4 bytes stored
    torch.save(state, work / "expand.pth")
    return ["convert", "expand.pth", "-o", "out.safetensors", "--img-size", "448"]


def compressed_pickle(work: Path) -> list[str]:
    torch_zip(work / "deflated.pth", timm_state(), {"data.pkl"})
    return ["convert", "deflated.pth", "-o", "out.safetensors", "--img-size", "448"]


def compressed_byteorder(work: Path) -> list[str]:
    torch_zip(work / "order.pth", timm_state(), {"byteorder"})
    return ["convert", "order.pth", "-o", "out.safetensors", "--img-size", "448"]


def huge_img_size(work: Path) -> list[str]:
    return ["convert", "model", "-o", "out", "--img-size", "32768"]


def huge_global_size(work: Path) -> list[str]:
    return ["convert", "model", "-o", "out", "--img-size", "448", "--global-size", "20000x20000"]


def huge_window(work: Path) -> list[str]:
    return ["inspect", "model", "--window", "8000"]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        (expanded, "stride-0 / expanded view); refused"),
        (compressed_pickle, "is compressed"),
        (compressed_byteorder, "is compressed"),
        (huge_img_size, "--img-size 32768x32768 (16 channels) would take 32 GiB of memory, over the 4 GiB budget"),
        (huge_global_size, "--global-size 20000x20000 (16 channels) would take 191 GiB"),
        (huge_window, "window 8000x8000 is larger than the 16x16 token grid of hiera (timm)"),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_huge_claims_are_refused_in_bounded_memory(work, baseline, forkserver, case, expected):
    args = case(work)
    before = snapshot(work)
    run = run_forked(forkserver, args, work)
    assert_refused(run, expected)
    assert snapshot(work) == before and leftovers(work) == []
    assert run.peak_rss < baseline + SLACK, (run.peak_rss, baseline)


# --- nothing replaced without --force -------------------------------------------------------------------------

def test_the_input_folders_own_config_is_never_written(work, forkserver):
    before = snapshot(work)
    for force in ([], ["--force"]):
        # a pt output does not land on the weights, but its config.json would replace the input's own
        args = ["convert", "model", "-o", "model", "--img-size", "448", "--format", "pt", *force]
        run = run_forked(forkserver, args, work)
        assert_refused(run, "config.json is the input file")
    assert snapshot(work) == before and leftovers(work) == []


@pytest.mark.parametrize("existing", ["out/config.json", "out.pt.abswin.json"])
def test_an_existing_companion_file_is_not_replaced(work, forkserver, existing):
    (work / existing).parent.mkdir(exist_ok=True)
    (work / existing).write_text("{}\n")
    output = "out" if existing.startswith("out/") else "out.pt"
    before = snapshot(work)
    run = run_forked(forkserver, ["convert", "model", "-o", output, "--img-size", "448"], work)
    assert_refused(run, f"{existing} already exists; pass --force")
    assert snapshot(work) == before and leftovers(work) == []


def test_force_replaces_the_whole_output(work, forkserver):
    (work / "out").mkdir()
    (work / "out" / "config.json").write_text("{}\n")
    run = run_forked(forkserver, ["convert", "model", "-o", "out", "--img-size", "448", "--force"], work)
    assert run.status == 0, run.stderr
    assert '"img_size"' in (work / "out" / "config.json").read_text()
    assert load_file(work / "out" / "model.safetensors")["pos_embed"].shape[1] == 112 * 112
    assert leftovers(work) == []


@pytest.mark.parametrize(
    ("plot", "expected"), [("e.png", "e.png already exists; pass --force"), ("e.xyz", "give a name ending in .png")]
)
def test_inspect_plot_checks_its_file_first(work, forkserver, plot, expected):
    (work / "e.png").write_bytes(b"a picture the user keeps")
    before = snapshot(work)
    run = run_forked(forkserver, ["inspect", "model", "--plot", plot], work)
    assert_refused(run, expected)
    assert snapshot(work) == before and leftovers(work) == []


def _file_size_limit(nbytes: int):
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # then a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))

    return limit


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("out.safetensors", "cannot write ./out.safetensors: File too large"),
        ("a/b/c/out.pt", "cannot write a/b/c/out.pt: File too large"),  # and the folders it made are gone
    ],
)
def test_a_file_size_limit_is_one_line_and_leaves_nothing(work, output, expected):
    before = snapshot(work)
    run = run_cli(["convert", "model", "-o", output, "--img-size", "448"], work, preexec=_file_size_limit(64 * 1024))
    assert_refused(run, expected)
    assert snapshot(work) == before and leftovers(work) == []


# --- exclusive destinations -----------------------------------------------------------------------------------

def test_a_destination_another_conversion_holds_is_refused(work, forkserver):
    """The lock a running conversion holds, taken here by the test itself so that the overlap is certain."""
    with locked(work, ["out/"]):  # the lock of a new output folder, in its parent
        before = snapshot(work)
        for force in ([], ["--force"]):
            run = run_forked(forkserver, ["convert", "model", "-o", "out", "--img-size", "448", *force], work)
            assert_refused(run, "another conversion is writing")
        assert snapshot(work) == before
    assert leftovers(work) == []


def test_a_killed_writers_lock_file_goes_with_the_next_run(work, forkserver):
    (work / f"{LOCK_MARK}0123456789abcdef").write_bytes(b"")  # what kill -9 leaves: a lock file nobody holds
    run = run_forked(forkserver, ["convert", "model", "-o", "out", "--img-size", "448"], work)
    assert run.status == 0, run.stderr
    assert leftovers(work) == []


def test_two_conversions_at_once_one_wins_whole(work):
    args = ["convert", "model", "-o", "out", "--img-size", "448"]
    procs = [subprocess.Popen([CLI, *args], cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    assert sorted(code for code, _ in results) == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "another conversion is writing" in loser or "already exists" in loser
    assert sorted(p.name for p in (work / "out").iterdir()) == ["config.json", "model.safetensors"]
    assert leftovers(work) == []


# --- signals --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def slow_source(tmp_path_factory) -> Path:
    """The example plus a 150 MB pass-through tensor: the write takes long enough to be interrupted."""
    folder = tmp_path_factory.mktemp("slow")
    shutil.copy(EXAMPLE / "config.json", folder / "config.json")
    save_file({**timm_state(), "aux.buffer": torch.zeros(40_000_000)}, folder / "model.safetensors")
    return folder


@pytest.mark.parametrize(
    ("signum", "fmt"), [(signal.SIGINT, "pt"), (signal.SIGTERM, "safetensors"), (signal.SIGHUP, "safetensors")],
    ids=["SIGINT-pt", "SIGTERM-safetensors", "SIGHUP-safetensors"],
)
def test_a_signal_while_writing_cleans_up_and_exits_128_plus_n(tmp_path, slow_source, signum, fmt):
    work = tmp_path / "work"
    work.mkdir()
    run = run_cli(["convert", str(slow_source), "-o", "out", "--img-size", "448", "--format", fmt], work,
                  send=signum, when=work)
    assert_refused(run, f"interrupted by {signum.name}", 128 + signum)
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("delay", [0.0, 0.1])
def test_sigint_at_start_up_is_one_line(work, delay):
    """From the moment the CLI module is loaded (its handlers are in place), while the conversion's modules load."""
    before = snapshot(work)
    run = run_cli(["convert", "model", "-o", "out", "--img-size", "448"], work, send=signal.SIGINT, when=delay)
    if (work / "out").exists():  # the machine finished first: then the output is whole, whenever the signal came
        # (after the command: its line and 130; in the interpreter's own shutdown, which has no handlers: the signal)
        assert run.status in (0, 130, -signal.SIGINT), run.stderr
        assert load_file(work / "out" / "model.safetensors")
        return
    assert_refused(run, "interrupted by SIGINT", 130)
    assert snapshot(work) == before and leftovers(work) == []


# --- one line, exit 2, for what the user's input caused ---------------------------------------------------------

def test_control_bytes_in_key_names_are_escaped(work, forkserver):
    save_file({"\x1b]0;pwned\x07\x9b\x00\x7f.pos_embed": torch.zeros(1, 7, 3)}, work / "odd.safetensors")
    run = run_forked(forkserver, ["convert", "odd.safetensors", "-o", "out", "--img-size", "448"], work)
    line = assert_refused(run, "\\x1b]0;pwned\\x07")
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in line), repr(line)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["convert", "model", "-o", "out", "--img-size", "448", "--to", "nope"], "Invalid value for '--target' / '--to'"),
        (["convert", "model", "-o", "", "--img-size", "448"], "the output name is empty"),
        (["convert", "hf://a/b@main/../../x", "-o", "out", "--img-size", "448"], "leaves the repo"),
        (["inspect", "a/b@../../x"], "revision '../../x' leaves the repo"),
        (["convert", "model", "-o", "out", "--img-size", "448", "--push-to", "not a repo"], "is not a Hub repo id"),
        (["convert", "model", "-o", "out", "--img-size", "-448"], "cannot read size"),
        (["convert", "model", "-o", "x" * 250 + ".safetensors", "--img-size", "448"], "File name too long"),
    ],
)
def test_user_errors_are_one_line_exit_2_and_write_nothing(work, forkserver, args, expected):
    before = snapshot(work)
    run = run_forked(forkserver, args, work)
    assert_refused(run, expected)
    assert snapshot(work) == before and leftovers(work) == []


def test_an_empty_position_tensor_is_a_user_error(work, forkserver):
    state = {**timm_state(), "pos_embed": torch.zeros(1, 3136, 0)}
    save_file(state, work / "empty.safetensors")
    before = snapshot(work)
    run = run_forked(forkserver, ["convert", "empty.safetensors", "-o", "out", "--img-size", "448"], work)
    assert_refused(run, "position tensor pos_embed [1, 3136, 0] holds nothing")
    assert snapshot(work) == before


def test_a_token_that_is_not_ascii_is_a_user_error(work):
    run = run_cli(["inspect", "org/repo"], work, env={"HF_TOKEN": "hf_caf\u00e9", "HF_HUB_OFFLINE": "0"})
    assert_refused(run, "HF_TOKEN holds characters that are not ASCII")


def test_a_deeply_nested_config_is_a_user_error(work, forkserver):
    (work / "model" / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    before = snapshot(work)
    run = run_forked(forkserver, ["convert", "model", "-o", "out", "--img-size", "448"], work)
    assert_refused(run, "cannot read it as JSON (RecursionError)")
    assert snapshot(work) == before


def test_a_long_output_name_still_fits_its_temp_names(work, forkserver):
    name = "x" * 235 + ".safetensors"  # 247 characters: the old temp name added 20 to it, past the 255 limit
    run = run_forked(forkserver, ["convert", "model", "-o", name, "--img-size", "448"], work)
    assert run.status == 0, run.stderr
    assert load_file(work / name)["pos_embed"].shape[1] == 112 * 112
    assert leftovers(work) == []


def test_lock_helpers_are_exclusive_within_one_process_too(tmp_path):
    """Two threads of one zoo writing one destination: flock locks open files, not processes."""
    lock = locked(tmp_path, ["model.safetensors"])
    with lock, pytest.raises(AbswinError, match="another conversion"), locked(tmp_path, ["model.safetensors"]):
        pass
    with locked(tmp_path, ["model.safetensors"]):  # released: free again
        pass
    assert list(tmp_path.iterdir()) == []


def test_force_replaces_the_files_of_an_existing_output_folder_and_keeps_the_folder(tmp_path, cli):
    source = example_path()  # weights + config.json: an output of two files
    out = tmp_path / "out"
    assert cli("convert", source, "-o", out, "--img-size", 128).exit_code == 0
    (out / "notes.txt").write_text("the user's own file")
    out.chmod(0o2750)  # setgid, no access for others: what the user set stays
    before, old_weights = os.stat(out), (out / "model.safetensors").read_bytes()
    assert cli("convert", source, "-o", out, "--img-size", 256, "--force").exit_code == 0
    after = os.stat(out)
    assert (after.st_ino, after.st_mode, after.st_gid) == (before.st_ino, before.st_mode, before.st_gid)
    assert (out / "notes.txt").read_text() == "the user's own file"
    assert (out / "model.safetensors").read_bytes() != old_weights
    assert leftovers(tmp_path) == []  # no stage, no lock left, inside the folder or beside it


def test_a_one_file_output_is_renamed_into_place_and_leaves_the_folders_other_files_alone(tmp_path, cli):
    """One file needs no folder swap: the source beside it keeps its inode and change time (so the hash cache,
    keyed by them, still knows it)."""
    _, source = hm.save_timm(tmp_path)
    out = tmp_path / "out.safetensors"
    assert cli("convert", source, "-o", out, "--img-size", 448).exit_code == 0
    folder, before = os.stat(tmp_path).st_ino, os.stat(source)
    assert cli("convert", source, "-o", out, "--img-size", 512, "--force").exit_code == 0
    after = os.stat(source)
    assert os.stat(tmp_path).st_ino == folder and (after.st_ino, after.st_ctime_ns) == (before.st_ino, before.st_ctime_ns)
    assert load_file(out)["pos_embed"].shape == (1, 128 * 128, hm.EMBED_DIM)
