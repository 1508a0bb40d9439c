"""Reliability round 3 (issue 26): what a hostile or unlucky user met, each through the product itself.

Pickles whose shared references or nesting would expand without bound, values that must fail in one line at
validation, the identity at the native size, what a ``.pt`` output keeps of its source, paths that are not files,
staging and locking beside the output. Runs that could hang on a regression run with a timeout.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from abswin_convert.errors import AbswinError
from abswin_convert.io.files import COMMITTED, TEMP_MARK
from abswin_convert.io.outputs import read_metadata
from abswin_convert.io.owner import Owner, host_id, me
from abswin_convert.io.staging import lock_path, locked, output_unit, sweep
from tests import hiera_models as hm
from tests.cli_forkserver import cli_env

CLI = str(Path(sys.executable).with_name("abswin-convert"))
ERROR = "abswin-convert: error: "


# A small fresh interpreter starts the CLI and reports its exit status and peak RSS. The CLI is not started from this
# test process because Linux counts a child's peak RSS from the image it was forked from (the high-water mark is
# kept across exec), and a test process that has built models by then would lend the child its gigabytes.
LAUNCHER = (
    "import json, os, sys\n"
    "pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ,"
    " file_actions=[(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)])\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "print(json.dumps([os.waitstatus_to_exitcode(status), usage.ru_maxrss * 1024]))\n"
)


def run_within(args: list[object], cwd: Path, seconds: float = 60, env: dict[str, str] | None = None
               ) -> tuple[int, str, int]:
    """``abswin-convert ARGS``, failing the test if it runs past ``seconds``: exit status, stderr, peak RSS in bytes."""
    err_path = cwd / f".stderr-{time.monotonic_ns()}"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, CLI, *map(str, args)], cwd=cwd,
                                stdout=subprocess.PIPE, stderr=err, env={**cli_env(), **(env or {})},
                                start_new_session=True)
        try:
            answer, _ = proc.communicate(timeout=seconds)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the launcher and the CLI it started
            proc.wait()
            err_path.unlink()
            pytest.fail(f"abswin-convert {' '.join(map(str, args))} still ran after {seconds} s")
    status, peak_rss = json.loads(answer)
    stderr = err_path.read_text(errors="replace")
    err_path.unlink()
    return status, stderr, peak_rss


def assert_one_line(status: int, stderr: str, expected: str, code: int = 2) -> None:
    lines = stderr.splitlines()
    assert status == code and len(lines) == 1 and lines[0].startswith(ERROR), (status, stderr)
    assert expected in lines[0], lines[0]


def timm_state() -> OrderedDict:
    """A tiny timm Hiera's state dict as ``state_dict()`` gives it: an OrderedDict with ``_metadata``."""
    torch.manual_seed(0)
    return hm.timm_model().state_dict()


def pickled_text(text: str) -> bytes:
    return b"X" + len(text.encode()).to_bytes(4, "little") + text.encode()


def with_pickle(path: Path, obj: object, spelled: bytes, replacement: bytes) -> Path:
    """``torch.save(obj)`` with the opcodes ``spelled`` in data.pkl replaced by ``replacement`` (opcodes no
    ``torch.save`` would write), the archive otherwise as torch wrote it."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with zipfile.ZipFile(buffer) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                assert data.count(spelled) == 1
                data = data.replace(spelled, replacement)
            dst.writestr(info.filename, data, compress_type=zipfile.ZIP_STORED)
    return path


def shared_graph(levels: int) -> list:
    """``x = [x, x]`` ``levels`` times: small as a pickle (memo), ``2**levels`` leaves as a tree."""
    x: list = [torch.zeros(1)]
    for _ in range(levels):
        x = [x, x]
    return x


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith((TEMP_MARK, ".abswin-lock-"))]


# --- 1. memory and time from small files ------------------------------------------------------------------------

@pytest.mark.parametrize("command", [["inspect"], ["convert", "-o", "out.pt", "--img-size", 448]])
def test_a_memo_shared_graph_is_refused_at_once(tmp_path, command):
    """2**40 references to one tensor in a file of a few kB: refused in one line, in seconds, in little memory."""
    torch.save({"model": timm_state(), "meta": shared_graph(40)}, tmp_path / "bomb.pth")
    assert (tmp_path / "bomb.pth").stat().st_size < 2_000_000  # the tiny model's weights
    status, stderr, rss = run_within([command[0], "bomb.pth", *command[1:]], tmp_path)
    assert_one_line(status, stderr, "data.pkl holds shared references that expand to more than 1,000,000 objects")
    assert rss < 1024**3 and sorted(p.name for p in tmp_path.iterdir()) == ["bomb.pth"]


def test_a_deeply_nested_list_is_refused_in_linear_time(tmp_path):
    depth = 200_000
    nested = b"]" * (depth + 1) + b"a" * depth  # [[[...]]] built by appends, without recursion in the pickle
    with_pickle(tmp_path / "deep.pth", {"model": timm_state(), "deep": "PLACEHOLDER"}, pickled_text("PLACEHOLDER"), nested)
    status, stderr, _ = run_within(["convert", "deep.pth", "-o", "out.pt", "--img-size", 448], tmp_path)
    assert_one_line(status, stderr, "data.pkl holds objects nested more than 100 levels deep")
    assert not (tmp_path / "out.pt").exists()


def test_a_list_that_holds_itself_is_refused(tmp_path):
    loop: list = [1]
    loop.append(loop)
    torch.save({"model": timm_state(), "loop": loop}, tmp_path / "loop.pth")
    status, stderr, _ = run_within(["convert", "loop.pth", "-o", "out.pt", "--img-size", 448], tmp_path)
    assert_one_line(status, stderr, "data.pkl holds a container that holds itself")


def test_shared_objects_stay_shared_in_a_pt_output(tmp_path, cli):
    """Below the bound, a memo-shared graph is written as shared (the pickle memo), never expanded."""
    source = tmp_path / "shared.pth"
    torch.save({"model": timm_state(), "meta": shared_graph(14)}, source)  # 16,384 leaves as a tree
    assert cli("convert", source, "-o", tmp_path / "out.pt", "--img-size", 448).exit_code == 0
    with zipfile.ZipFile(source) as a, zipfile.ZipFile(tmp_path / "out.pt") as b:
        sizes = [z.getinfo(next(n for n in z.namelist() if n.endswith("/data.pkl"))).file_size for z in (a, b)]
    assert sizes[1] < 2 * sizes[0], sizes
    meta = torch.load(tmp_path / "out.pt", weights_only=True)["meta"]
    assert meta[0] is meta[1] and meta[0][0] is meta[1][1]


# --- 2. exit 2, one line, at validation ---------------------------------------------------------------------------

def test_a_huge_int_beside_the_weights_is_written_back(tmp_path, cli):
    torch.save({"model": timm_state(), "seed": 2**3000, "small": -(2**70)}, tmp_path / "big.pth")
    result = cli("convert", tmp_path / "big.pth", "-o", tmp_path / "out.pt", "--img-size", 448)
    assert result.exit_code == 0, result.output
    # as in the source, which torch.save wrote with LONG4: torch's weights-only reader knows no LONG4 at all
    loaded = torch.load(tmp_path / "out.pt", weights_only=False)
    assert loaded["seed"] == 2**3000 and loaded["small"] == -(2**70)


def _huge_dimension(work: Path) -> list[object]:
    """A pass-through tensor of shape (0, 2**64): empty, so its storage is none, but no torch size is that large."""
    spelled = b"K\x00K\x07\x86"  # the size (0, 7) as torch pickles it
    huge = b"K\x00\x8a\x09" + (2**64).to_bytes(9, "little", signed=True) + b"\x86"
    with_pickle(work / "dim.pth", {"model": timm_state(), "aux": torch.zeros(0, 7)}, spelled, huge)
    return ["convert", "dim.pth", "-o", "out.pt", "--img-size", 448]


def _manifest(work: Path, text: str) -> list[object]:
    (work / "zoo.toml").write_text(f'[[model]]\nsource = "model.pth"\n{text}\n')
    return ["zoo", "zoo.toml", "--dry-run"]


HUGE = str(10**400)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        (lambda w: ["convert", "model.pth", "-o", "out", "--img-size", HUGE], "has a side over 1,048,576 pixels"),
        (lambda w: ["convert", "model.pth", "-o", "out", "--img-size", 448, "--global-size", HUGE], "has a side over"),
        (lambda w: ["inspect", "model.pth", "--plot", "p.png", "--img-size", HUGE], "has a side over"),
        (lambda w: ["convert", "model.pth", "-o", "out", "--img-size", "448x" + "9" * 5000], "cannot read size"),
        (_huge_dimension, "a tensor's shape must be an integer from 0 to 2**63 - 1"),
        (lambda w: _manifest(w, "img_size = " + "[" * 5000 + "448" + "]" * 5000), "nested too deeply"),
        (lambda w: _manifest(w, "img_size = 448\nresources = {num_cpus = nan}"), "must be a finite number >= 0"),
        (lambda w: _manifest(w, "img_size = 448\nname = '" + "n" * 300 + "'"), "name is 300 characters"),
        (lambda w: _manifest(w, "img_size = [448, 448]"), "img_size lists 448x448 twice"),
        (lambda w: _manifest(w, "img_size = 448\nhooks = ['no_such_module_here.x:run']"), "no module no_such_module_here"),
    ],
    ids=["img-size", "global-size", "plot", "digits", "dimension", "manifest-depth", "nan", "long-name", "twice",
         "hook-module"],
)
def test_values_a_user_can_give_are_one_line_exit_2(tmp_path, forkserver, case, expected):
    torch.save(timm_state(), tmp_path / "model.pth")
    args = case(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    run = forkserver.run(args, tmp_path)
    assert_one_line(run.returncode, run.stderr, expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("value", ["1e308G", "nan", "inf", "9e19"])
def test_an_impossible_memory_budget_is_one_line(tmp_path, value):
    torch.save(timm_state(), tmp_path / "model.pth")
    status, stderr, _ = run_within(["convert", "model.pth", "-o", "out", "--img-size", 448], tmp_path,
                                      env={"ABSWIN_MAX_MEMORY": value})
    assert_one_line(status, stderr, "ABSWIN_MAX_MEMORY=")
    assert not (tmp_path / "out").exists()


# --- 8. .pt fidelity ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("wrapped", [False, True])
def test_a_pt_output_keeps_ordered_dicts_metadata_views_and_sharing(tmp_path, cli, wrapped):
    state = timm_state()
    base = torch.arange(12, dtype=torch.float32)
    state["extra.view"] = base[2::3]  # a strided view into a larger storage
    state["extra.alias"] = state["head.fc.weight"]  # one tensor under two names
    state["extra.half"] = base[:6]  # another view of the same storage
    source = tmp_path / "model.pth"
    torch.save({"model": state, "epoch": 3} if wrapped else state, source)
    assert cli("convert", source, "-o", tmp_path / "out.pt", "--img-size", 448).exit_code == 0
    loaded = torch.load(tmp_path / "out.pt", weights_only=True)
    out = loaded["model"] if wrapped else loaded
    assert type(out) is OrderedDict and out._metadata == state._metadata  # type: ignore[attr-defined]
    view = out["extra.view"]
    assert (view.stride(), view.storage_offset(), view.untyped_storage().nbytes()) == ((3,), 2, 48)
    assert out["extra.half"].untyped_storage().data_ptr() == view.untyped_storage().data_ptr()
    assert out["extra.alias"] is out["head.fc.weight"]
    assert torch.equal(view, base[2::3]) and out["pos_embed"].shape[1] == 112 * 112
    missing, unexpected = hm.timm_model(img_size=448).load_state_dict(out, strict=False)
    assert not missing and sorted(unexpected) == ["extra.alias", "extra.half", "extra.view"]


# --- 9. identity at the native size means the same bits -----------------------------------------------------------

def test_the_native_size_gives_back_the_same_bits(tmp_path, cli):
    _, source = hm.save_timm(tmp_path)
    state = load_file(source)
    state["pos_embed"][0, 0] = torch.finfo(torch.float32).max  # one row of float32-max values
    save_file(state, source)
    assert cli("convert", source, "-o", tmp_path / "out.safetensors", "--img-size", 224).exit_code == 0
    out = load_file(tmp_path / "out.safetensors")["pos_embed"]
    assert out.numpy().tobytes() == state["pos_embed"].numpy().tobytes()


# --- 3. paths that are not files ----------------------------------------------------------------------------------

def _fifo(tmp_path: Path) -> str:
    os.mkfifo(tmp_path / "fifo")
    return str(tmp_path / "fifo")


@pytest.mark.parametrize(
    ("cache", "why"),
    [(_fifo, "not a regular file"), (lambda t: "/dev/zero", "not a regular file"),
     (lambda t: str(t), "not a regular file")],
    ids=["fifo", "dev-zero", "folder"],
)
def test_a_hash_cache_that_is_not_a_regular_file_is_ignored_with_one_warning(tmp_path, cache, why):
    torch.save(timm_state(), tmp_path / "model.pth")
    path = cache(tmp_path)
    status, stderr, rss = run_within(["convert", "model.pth", "-o", "out.safetensors", "--img-size", 448],
                                        tmp_path, seconds=60, env={"ABSWIN_HASH_CACHE": path})
    assert status == 0 and stderr.splitlines() == [f"abswin-convert: warning: ABSWIN_HASH_CACHE {path}: {why}; the "
                                                   "hash cache is not used"], stderr
    assert rss < 1024**3 and load_file(tmp_path / "out.safetensors")["pos_embed"].shape[1] == 112 * 112
    assert Path(path).exists() and not Path(path).is_file()  # left as it was, not replaced by a file


def test_a_damaged_hash_cache_costs_a_hash_and_nothing_else(tmp_path):
    torch.save(timm_state(), tmp_path / "model.pth")
    cache = tmp_path / "cache.json"
    cache.write_text("[" * 100_000 + "]" * 100_000)
    env = {"ABSWIN_HASH_CACHE": str(cache)}
    status, stderr, _ = run_within(["convert", "model.pth", "-o", "a.safetensors", "--img-size", 448], tmp_path,
                                      env=env)
    assert status == 0 and stderr == "", stderr
    entries = json.loads(cache.read_text())
    assert len(entries) == 1
    key = next(iter(entries))
    cache.write_text(json.dumps({key: "not a sha256"}))  # an entry that is no hex digest: not used
    status, stderr, _ = run_within(["convert", "model.pth", "-o", "b.safetensors", "--img-size", 448], tmp_path,
                                      env=env)
    assert status == 0 and read_metadata(tmp_path / "b.safetensors")["abswin.source_sha256"] == entries[key]


@pytest.mark.parametrize("manifest", ["/dev/zero", "fifo", "."])
def test_a_manifest_that_is_not_a_regular_file_is_refused(tmp_path, manifest):
    if manifest == "fifo":
        os.mkfifo(tmp_path / "fifo")
    status, stderr, _ = run_within(["zoo", manifest, "--dry-run"], tmp_path, seconds=60)
    assert_one_line(status, stderr, "not a regular file; give the path of a manifest")


# --- 4-7. staging beside the output, folders kept, locks that mean what they say, what kill -9 leaves ---------------

def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def _killed_inside_output_unit(files: list[Path]) -> None:
    """A writer SIGKILLed while its files are staged: what it leaves is a stage and locks of a dead owner."""
    code = (
        "import os, sys\nfrom pathlib import Path\nfrom abswin_convert.io.staging import output_unit\n"
        "files = [Path(p) for p in sys.argv[1:]]\n"
        "with output_unit(files, [], True) as staging:\n"
        "    for f in files:\n        staging.path(f).write_bytes(b'partial' * 1000)\n"
        "    os.kill(os.getpid(), 9)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, *map(str, files)], env=cli_env())
    assert done.returncode == -9


def test_staging_and_locks_go_inside_the_destinations_own_folder(tmp_path):
    """``-o VOLUME/out.safetensors``: nothing is made above VOLUME (a mount point's parent, a home's parent)."""
    volume = tmp_path / "volume"
    volume.mkdir()
    dest = volume / "out.safetensors"
    with output_unit([dest], [], False) as staging:
        assert staging.stage.parent == volume and sorted(p.name for p in tmp_path.iterdir()) == ["volume"]
        staging.path(dest).write_bytes(b"weights")
    assert dest.read_bytes() == b"weights" and sorted(p.name for p in volume.iterdir()) == ["out.safetensors"]


def test_a_forced_replace_keeps_a_file_another_output_added_to_the_folder_meanwhile(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    files = [out / "model.safetensors", out / "config.json"]
    for f in files:
        f.write_text("old")
    with output_unit(files, [], True) as staging:
        for f in files:
            staging.path(f).write_text("new")
        (out / "other.safetensors").write_text("another conversion's output, written meanwhile")
    assert [f.read_text() for f in files] == ["new", "new"]
    assert (out / "other.safetensors").exists() and leftovers(tmp_path) == []


def test_two_outputs_sharing_a_config_cannot_both_write_it(tmp_path, forkserver):
    """A safetensors and a --format pt conversion into one folder both write config.json: one of them waits."""
    torch.save(timm_state(), tmp_path / "model.pth")
    (tmp_path / "out").mkdir()
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "hiera_tiny_224"}))
    with locked(tmp_path / "out", ["config.json"]):  # as the other conversion holds it while it writes
        run = forkserver.run(["convert", tmp_path, "-o", "out", "--img-size", 448, "--format", "pt"], tmp_path)
    assert_one_line(run.returncode, run.stderr, "another conversion is writing out/config.json right now")
    assert list((tmp_path / "out").iterdir()) == []


def test_a_lock_is_stale_only_when_its_owner_is_known_dead_on_its_own_host(tmp_path):
    lock = lock_path(tmp_path, "model.safetensors")
    for holder, stale in [
        (Owner(host_id(), _dead_pid()), True),  # gone: kill -9
        (Owner(host_id(), os.getpid(), "1"), True),  # the pid now belongs to a process started at another time
        (me(), False),  # alive
        (Owner("0badc0de", _dead_pid()), False),  # another host, or container: its pids are not ours to judge
    ]:
        lock.write_text(str(holder))
        if stale:
            with locked(tmp_path, ["model.safetensors"]):
                assert Owner.parse(lock.read_text()) == me()
            assert not lock.exists()
        else:
            with pytest.raises(AbswinError, match="another conversion is writing"), locked(tmp_path, ["model.safetensors"]):
                pass
            sweep(tmp_path)
            assert lock.read_text() == str(holder)


def test_a_sweep_never_touches_another_hosts_staging(tmp_path):
    pid = _dead_pid()
    theirs = tmp_path / f"{TEMP_MARK}0badc0de-{pid}-0a1b2c3d"
    ours = tmp_path / f"{TEMP_MARK}{host_id()}-{pid}-0a1b2c3d"
    for stage in (theirs, ours):
        stage.mkdir()
        (stage / "model.safetensors").write_bytes(b"partial")
    sweep(tmp_path)
    assert theirs.exists() and not ours.exists()


def test_concurrent_outputs_in_one_folder_are_never_refused_for_nothing(tmp_path):
    """The zoo's threads: each writes its own output in a shared folder while the others take, sweep and release
    their locks; none may be told another conversion is writing its file."""
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        for round_ in range(25):
            dest = tmp_path / f"out-{i}-{round_}.safetensors"
            try:
                with output_unit([dest], [], False) as staging:
                    staging.path(dest).write_bytes(b"w")
            except BaseException as exc:  # gathered for the assertion below
                errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(list(tmp_path.glob("out-*"))) == 200 and leftovers(tmp_path) == []


def test_what_kill_9_leaves_goes_with_any_later_run_in_that_folder(tmp_path, forkserver):
    torch.save(timm_state(), tmp_path / "model.pth")
    out = tmp_path / "out"
    out.mkdir()
    _killed_inside_output_unit([out / "a.safetensors"])
    assert len(leftovers(out)) == 2  # its stage and its lock, until:
    run = forkserver.run(["convert", "model.pth", "-o", out / "b.safetensors", "--img-size", 448], tmp_path)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in out.iterdir()) == ["b.safetensors"]


def test_a_move_cut_short_by_kill_9_is_finished_by_the_next_run(tmp_path, forkserver):
    """Killed after committing, with the config moved and the weights not yet: the next run in that folder moves
    the weights, so weights and config agree again."""
    torch.save(timm_state(), tmp_path / "model.pth")
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.safetensors").write_text("old weights")
    (out / "config.json").write_text("new config")
    stage = out / f"{TEMP_MARK}{host_id()}-{_dead_pid()}-0a1b2c3d"
    stage.mkdir()
    (stage / COMMITTED).touch()
    (stage / "model.safetensors").write_text("new weights")
    run = forkserver.run(["convert", "model.pth", "-o", out / "other.safetensors", "--img-size", 448], tmp_path)
    assert run.returncode == 0, run.stderr
    assert (out / "model.safetensors").read_text() == "new weights" and not stage.exists()
    assert leftovers(out) == []


def test_a_zoo_run_sweeps_its_out_folder(tmp_path):
    """The zoo holds its out for itself: what killed runs and lost workers (of any host) left there goes."""
    torch.save(timm_state(), tmp_path / "model.pth")
    out = tmp_path / "converted"
    out.mkdir()
    _killed_inside_output_unit([out / "stray.safetensors"])
    (out / f"{TEMP_MARK}0badc0de-1-0a1b2c3d").mkdir()  # and a lost Ray worker's, from another node
    lock_path(out, f"{TEMP_MARK}0badc0de-1-0a1b2c3d/").write_text(str(Owner("0badc0de", 1)))
    assert len(leftovers(out)) == 4
    (tmp_path / "zoo.toml").write_text('[[model]]\nsource = "model.pth"\nimg_size = 448\nfamily = "hiera"\n')
    status, stderr, _ = run_within(["zoo", "zoo.toml", "-o", out], tmp_path, seconds=120)
    assert status == 0, stderr
    assert leftovers(out) == []


# --- 10. smaller ----------------------------------------------------------------------------------------------------

def test_a_pt_output_into_the_sources_own_folder_is_not_an_input(tmp_path, cli):
    """The folder holds model.safetensors alone: no config.json was read, so none is an input to protect (a .pt output
    in a folder is named pytorch_model.bin)."""
    _, source = hm.save_timm(tmp_path)
    source.rename(tmp_path / "model.safetensors")
    result = cli("convert", tmp_path, "-o", tmp_path, "--format", "pt", "--img-size", 448)
    assert result.exit_code == 0, result.output
    assert torch.load(tmp_path / "pytorch_model.bin", weights_only=True)["pos_embed"].shape[1] == 112 * 112


def test_a_safetensors_header_over_safetensors_own_limit_is_refused_unread(tmp_path, forkserver):
    path = tmp_path / "big.safetensors"
    with open(path, "wb") as f:
        f.write((100_000_001).to_bytes(8, "little") + b"{")
        f.truncate(8 + 100_000_001)  # sparse: 100 MB that take no disk
    run = forkserver.run(["inspect", path], tmp_path)
    assert_one_line(run.returncode, run.stderr, "the safetensors header claims 100,000,001 bytes, over safetensors' own limit")
    assert run.peak_rss < 600 * 1024**2
