"""Time and peak RSS of `inspect` and `convert` against the size of a safetensors header

    peak RSS <= baseline + c x (header bytes)

The source is the shipped example (a tiny timm Hiera) with many zero-byte tensors more, so that the header is
nearly all of the file: up to safetensors' own limit of 100 MB. Each command is a child process; its peak RSS
comes from ``wait4`` (the files are built in a child too: a child's peak counts from the image it was forked from,
so this process stays small). The baseline is the same command on the example itself; the time is also given against
``cp && sync`` of the same file, measured in the same run.

    python scripts/bench_header.py [--counts 100000,400000,1300000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "abswin_convert" / "examples" / "hiera_tiny" / "model.safetensors"

CLI = str(Path(sys.executable).with_name("abswin-convert"))


def many_entries(dest: Path, count: int) -> int:
    """``tests.big_headers.with_many_entries``, in a child process; the header's length."""
    done = subprocess.run([sys.executable, "-m", "tests.big_headers", str(dest), str(count)], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


def run(args: list[str]) -> tuple[float, int]:
    """Seconds and peak RSS in bytes of ``abswin-convert ARGS``; it must succeed."""
    start = time.perf_counter()
    proc = subprocess.Popen([CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(args)} failed: {proc.stderr.read().decode() if proc.stderr else ''}")
    return seconds, usage.ru_maxrss * 1024


def copy_and_sync(source: Path, dest: Path) -> float:
    start = time.perf_counter()
    shutil.copyfile(source, dest)
    with open(dest, "rb") as f:
        os.fsync(f.fileno())
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", default="100000,400000,1300000", help="extra tensors, comma separated")
    counts = [int(c) for c in parser.parse_args().counts.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        commands = {
            "inspect": lambda source: ["inspect", str(source)],
            "convert": lambda source: ["convert", str(source), "-o", f"{tmp}/out", "--img-size", "448", "--force"],
        }
        baseline = {name: run(args(EXAMPLE))[1] for name, args in commands.items()}
        print("baseline peak (the example alone): " + ", ".join(f"{n} {b / 2**20:.0f} MiB" for n, b in baseline.items()))
        print(f"{'tensors':>9} {'header MB':>10} {'command':>8} {'s':>6} {'x cp+sync':>10} {'peak MiB':>9} {'c':>5}")
        for count in counts:
            source = Path(tmp) / f"many-{count}.safetensors"
            header = many_entries(source, count)
            copy = copy_and_sync(source, Path(tmp) / "copy.safetensors")
            for name, args in commands.items():
                seconds, peak = run(args(source))
                print(f"{count:>9} {header / 1e6:>10.1f} {name:>8} {seconds:>6.1f} {seconds / copy:>10.0f} "
                      f"{peak / 2**20:>9.0f} {(peak - baseline[name]) / header:>5.1f}")


if __name__ == "__main__":
    main()
