"""Where the time of a safetensors -> safetensors conversion goes, beyond ``cp && sync`` of the same file.

    python scripts/profile_convert.py SOURCE.safetensors [--img-size 1024] [--top 12]

SOURCE is e.g. the SAM ViT-H-shaped file ``scripts/bench_convert.py`` generates (``.bench-cache/sam_vit_h.safetensors``).
Prints, each measured once on a warm page cache (run it on a quiet machine, or read the figures as rough):

- the import time of ``abswin_convert.api`` (``python -X importtime``) and its largest imports;
- the parts of the writer taken apart: the source's sha256 alone, the kernel copy (``copy_file_range``) alone, the
  fsync of that copy, ``cp && sync`` for reference, and the whole ``convert()`` in this process, first with the
  hash cache off (the sha256 computed beside the copy), then with the sha256 from the cache;
- ``cProfile`` of ``convert()``: the functions with the most cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from abswin_convert.api import convert
from abswin_convert.io import hash_cache

CHUNK = 1 << 30


def import_times(module: str, top: int) -> tuple[float, list[tuple[float, str]]]:
    """Total seconds to import ``module`` in a fresh interpreter, and its ``top`` slowest imports (cumulative)."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], capture_output=True,
                            text=True, check=True)
    rows = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = (part.strip() for part in line.removeprefix("import time:").split("|"))
        if not name.startswith(" "):  # top-level entries only (nested ones are indented)
            rows.append((int(cumulative) / 1e6, name.strip()))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
    return time.perf_counter() - start, sorted(rows, reverse=True)[:top]


def timed(label: str, action, results: dict[str, float]) -> None:
    start = time.perf_counter()
    action()
    results[label] = time.perf_counter() - start


def hash_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def kernel_copy(source: Path, dest: Path, fsync: bool) -> None:
    size = source.stat().st_size
    with open(source, "rb") as src, open(dest, "wb") as out:
        done = 0
        while done < size:
            done += os.copy_file_range(src.fileno(), out.fileno(), min(CHUNK, size - done), done, done)
        if fsync:
            os.fsync(out.fileno())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("--img-size", type=int, default=1024)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    source = args.source.resolve()
    print(f"{source.name}: {source.stat().st_size / 1e9:.2f} GB; load average {os.getloadavg()}\n")

    total, slowest = import_times("abswin_convert.api", args.top)
    print(f"import abswin_convert.api: {total:.2f} s wall in a fresh interpreter; largest imports (cumulative s):")
    print("\n".join(f"  {seconds:6.3f}  {name}" for seconds, name in slowest))

    parts: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=source.parent, prefix="profile-") as tmp:
        work = Path(tmp)
        hash_file(source)  # warm the page cache
        timed("sha256 of the source alone", lambda: hash_file(source), parts)
        timed("copy_file_range alone (no fsync)", lambda: kernel_copy(source, work / "copy", False), parts)
        timed("fsync of that copy", lambda: os.fsync(os.open(work / "copy", os.O_RDONLY)), parts)
        os.unlink(work / "copy")
        os.sync()
        timed("copy_file_range + fsync", lambda: kernel_copy(source, work / "copy", True), parts)
        os.unlink(work / "copy")
        os.sync()
        timed("cp && sync", lambda: subprocess.run(["sh", "-c", f'cp "{source}" "{work}/cp" && sync "{work}/cp"'],
                                                   check=True), parts)
        os.unlink(work / "cp")
        os.sync()
        os.environ[hash_cache.ENV_VAR] = "off"  # a first conversion: the sha256 computed beside the copy
        timed("convert() in this process (imports done), hash cache off",
              lambda: convert(source, work / "cold.safetensors", args.img_size), parts)
        os.environ[hash_cache.ENV_VAR] = str(work / "sha256.json")
        convert(source, work / "warm.safetensors", args.img_size)  # fills the cache
        os.sync()
        profiler = cProfile.Profile()
        timed("convert() in this process (imports done), the sha256 from the hash cache",
              lambda: profiler.runcall(convert, source, work / "out.safetensors", args.img_size), parts)
    print("\nparts, each once, seconds:")
    print("\n".join(f"  {seconds:6.2f}  {label}" for label, seconds in parts.items()))
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(args.top)
    print("\ncProfile of the last convert() (the sha256 from the cache):")
    print("\n".join(line for line in text.getvalue().splitlines() if line.strip())[-(args.top + 3) * 120 :])


if __name__ == "__main__":
    main()
