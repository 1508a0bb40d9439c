"""Peak RSS of conversions against the size of the tensor they rewrite: the k of the stated memory bound

    peak RSS <= baseline (interpreter + numpy + libraries) + k x (largest tensor rewritten, float32 bytes)

Each conversion of the shipped example (a tiny timm Hiera, 16 channels) is a child process; its peak RSS comes
from ``wait4``. The baseline is the same conversion at 224 px (the embedding is then kilobytes).

    python scripts/bench_memory.py [--sizes 448,1792,3584,5376]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

EXAMPLE = Path(__file__).parents[1] / "abswin_convert" / "examples" / "hiera_tiny"
CLI = str(Path(sys.executable).with_name("abswin-convert"))
CHANNELS, PATCH_STRIDE = 16, 4


def peak_rss(args: list[str]) -> int:
    """The child's peak RSS in bytes; it must succeed."""
    proc = subprocess.Popen([CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(args)} failed: {proc.stderr.read().decode() if proc.stderr else ''}")
    return usage.ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="448,1792,3584,5376", help="--img-size values, comma separated")
    sizes = [int(s) for s in parser.parse_args().sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        def convert(size: int) -> int:
            return peak_rss(["convert", str(EXAMPLE), "-o", f"{tmp}/out-{size}", "--img-size", str(size)])

        baseline = convert(224)
        print(f"baseline (224: an embedding of kilobytes): {baseline / 2**20:.0f} MiB")
        print(f"{'img-size':>9} {'tensor MiB':>11} {'peak MiB':>9} {'k':>6}")
        for size in sizes:
            tensor = (size // PATCH_STRIDE) ** 2 * CHANNELS * 4
            peak = convert(size)
            print(f"{size:>9} {tensor / 2**20:>11.1f} {peak / 2**20:>9.0f} {(peak - baseline) / tensor:>6.1f}")


if __name__ == "__main__":
    main()
