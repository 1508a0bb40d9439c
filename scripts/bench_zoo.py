"""Wall time of the 20-file zoo under both executors, against copying the same files, measured in one run.

    python scripts/bench_zoo.py [--cache .bench-cache] [--runs 3] [--jobs 2]

Uses bench_convert.py's 20 ``hiera_tiny_224``-shaped checkpoints (110 MB each, generated once into ``--cache``) and
its way of timing: every command a child process, one warm-up round, then ``--runs`` rounds alternating between
the commands; medians. The commands:

- ``cp -r`` of the 20 files, and ``cp -r`` followed by ``sync`` of the copies (the zoo fsyncs what it writes);
- ``abswin-convert --version``: the interpreter and torch start-up, taken off in the "start-up off" columns;
- ``abswin-convert zoo --executor local``;
- ``abswin-convert zoo --executor ray``, which starts and stops a local Ray instance in every run;
- ``abswin-convert zoo --executor ray --ray-address ADDR``: the same on a Ray cluster that is already up (this
  script starts one with ``num_cpus`` = ``--jobs``), so only the tasks are timed, not Ray's start-up.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import ray
from bench_convert import (
    CLI,
    REPO,
    STARTUP,
    ZOO_SIZE,
    Case,
    hiera_tiny_shapes,
    measure,
    median_sample,
    summarise,
    table,
    write_random_safetensors,
)


def prepare_zoo(zoo: Path) -> list[Path]:
    """The 20 checkpoints bench_convert.py uses, generated when missing."""
    if not (zoo / f"{ZOO_SIZE - 1:02d}" / "model.safetensors").exists():
        print(f"generating {zoo} ({ZOO_SIZE} hiera_tiny_224-shaped checkpoints) ...", file=sys.stderr)
        shapes = hiera_tiny_shapes()
        for i in range(ZOO_SIZE):
            write_random_safetensors(zoo / f"{i:02d}" / "model.safetensors", shapes, seed=i + 1)
    return sorted(zoo.iterdir())


def cases(zoo: Path, sources: list[Path], work: Path, jobs: int, address: str) -> list[Case]:
    copies, out = work / "zoo-cp", work / "zoo-out"
    manifest = work / "zoo.toml"
    entries = "".join(f'\n[[model]]\nname = "{s.name}"\nsource = "{s / "model.safetensors"}"\nimg_size = 448\n'
                      for s in sources)
    manifest.write_text(f'[defaults]\nto = "baked"\n{entries}')
    sync = " ".join(f'"{copies}/{s.name}/model.safetensors"' for s in sources)
    zoo_command = [*CLI, "zoo", str(manifest), "--output", str(out), "--jobs", str(jobs)]
    return [
        Case("cp -r", ["cp", "-r", str(zoo), str(copies)], copies),
        Case("cp -r + sync", ["sh", "-c", f'cp -r "{zoo}" "{copies}" && sync {sync}'], copies),
        Case(STARTUP, [*CLI, "--version"], None, True),
        Case("zoo --executor local", [*zoo_command, "--executor", "local"], out, True),
        Case("zoo --executor ray (starts a local Ray)", [*zoo_command, "--executor", "ray"], out, True),
        Case("zoo --executor ray --ray-address (Ray up)", [*zoo_command, "--executor", "ray", "--ray-address", address],
             out, True),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=REPO / ".bench-cache", help="where the inputs are generated once")
    parser.add_argument("--runs", type=int, default=3, help="measured rounds after one warm-up round")
    parser.add_argument("--jobs", type=int, default=2, help="--jobs of both executors, and the CPUs of the Ray cluster")
    args = parser.parse_args()

    zoo = args.cache / "zoo"
    sources = prepare_zoo(zoo)
    work = args.cache / "work-zoo"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.environ["PYTHONPATH"] = str(REPO)  # the commands (and Ray's workers) import this tree's package
    ray.init(num_cpus=args.jobs, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        bench = cases(zoo, sources, work, args.jobs, ray.get_runtime_context().gcs_address)
        samples = measure(bench, args.runs)
        rows = summarise(bench, samples, median_sample(samples[STARTUP]))
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    print(f"Zoo of {ZOO_SIZE} hiera_tiny_224-shaped checkpoints (110 MB each) to 448 px, --jobs {args.jobs}; "
          f"median of {args.runs} after a warm-up; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}\n")
    print("\n".join(table(rows)))


if __name__ == "__main__":
    main()
