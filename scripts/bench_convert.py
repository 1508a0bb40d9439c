"""Benchmark ``abswin-convert`` against ``cp`` on a SAM-ViT-H-sized checkpoint and on a zoo of small ones.

    python scripts/bench_convert.py [--cache .bench-cache] [--runs 5] [--json]

Generates once, and keeps in ``--cache``, a checkpoint with the exact tensor names and shapes of segment_anything's
``build_sam_vit_h`` (2.56 GB fp32, random values) as safetensors, as a torch ``.pth`` and as three safetensors
shards with a ``model.safetensors.index.json``, and 20 checkpoints shaped like timm's ``hiera_tiny_224`` (110 MB
each). Then, in one run, alternating between the commands, one warm-up round and ``--runs`` measured rounds, it
times each command as a child process and reads its peak RSS (``wait4``):

- ``cp`` of the file, and ``cp`` followed by ``sync`` of the copy (our writer fsyncs before its rename, cp does not);
- ``python -c "import torch"``, ``abswin-convert --version`` and ``--help``: what starting a command costs;
- ``abswin-convert convert`` from safetensors, from ``.pth`` and from the shards to safetensors, and to ``--format pt``
  (sources hashed in an earlier round come from the hash cache, as a repeated conversion's do); and from safetensors
  with the hash cache off, as the first conversion of a file is: its sha256 computed beside the copy;
- the naive route (load everything, interpolate the embedding, ``save_file``, no fsync), from both inputs.

Each row is a median, with its ratio to the median of ``cp + sync`` and, for conversions, to the naive route from
the same input in the same run (time and peak RSS); start-up rows are compared with ``import torch``. It also times ``fit_global``
(64x64x1280 -> 7x7) and the zoo against copying all 20 files. All files are read from a warm page cache.

``--baseline-tree DIR`` also times the two conversions and the zoo with the package copy in ``DIR/abswin_convert``
(put first on ``PYTHONPATH``), e.g. the code before an optimisation, in the same rounds: a before/after in one run.
``--only sam`` or ``--only zoo`` measures one of the two.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from abswin_convert.io.files import atomic_file
from abswin_convert.io.hash_cache import ENV_VAR as HASH_CACHE_VAR
from abswin_convert.io.safetensors_reader import read_header
from abswin_convert.io.safetensors_writer import OutputTensor, RawBytes, safetensors_header, write_safetensors

REPO = Path(__file__).resolve().parent.parent
CLI = [str(Path(sys.executable).with_name("abswin-convert"))]  # the console script of this environment
SAM_POS_KEY = "image_encoder.pos_embed"
IMPORT_TORCH = 'python -c "import torch"'
CP_SYNC = "cp + sync"
NAIVE_SAFETENSORS = "naive safetensors (load_file, edit, save_file)"
NAIVE_PTH = "naive .pth (torch.load, edit, save_file)"
SHARDED = "convert 3 shards -> safetensors"
FIRST_TIME = "convert safetensors -> safetensors, source never hashed before (hash cache off)"
SHARDS = 3
TARGETS = {  # issue 12's targets, as ratios in one run
    "abswin-convert --version": "<= 0.25x import torch",
    "abswin-convert --help": "<= 0.25x import torch",
    "convert safetensors -> safetensors": "<= 1.3x cp+sync, RSS <= 150 MB; <= 1/1.7 naive time, 1/20 its RSS",
    "convert .pth -> safetensors": "<= 1.6x cp+sync",
    "zoo: abswin-convert zoo": "<= 1.3x cp -r + sync",
}
ZOO_SIZE = 20
MB = 1024 * 1024

# The route every loader takes today: materialise everything, resize the embedding, save it all again.
NAIVE = """
import sys, torch, torch.nn.functional as F
from safetensors.torch import load_file, save_file
src, dst, key, grid = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
state = load_file(src) if src.endswith(".safetensors") else torch.load(src, map_location="cpu", weights_only=True)
pos = state[key].permute(0, 3, 1, 2)
state[key] = F.interpolate(pos, size=(grid, grid), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).contiguous()
save_file(state, dst, metadata={"format": "pt"})
"""

# Runs a command as its child and prints its wall time, peak RSS and exit status. A small fresh interpreter forks
# it: a child forked straight from this torch-sized process would inherit its RSS high-water mark (ru_maxrss).
LAUNCH = """
import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        os.execvp(sys.argv[1], sys.argv[1:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
print(time.perf_counter() - start, usage.ru_maxrss * 1024, os.waitstatus_to_exitcode(status))
"""

# ---------------------------------------------------------------------------------------------- generation


def model_shapes(build) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of a model's state dict, built on the meta device (nothing is allocated)."""
    with torch.device("meta"):
        model = build()
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def sam_vit_h_shapes() -> list[tuple[str, tuple[int, ...]]]:
    from segment_anything.build_sam import build_sam_vit_h

    return model_shapes(build_sam_vit_h)


def hiera_tiny_shapes() -> list[tuple[str, tuple[int, ...]]]:
    import timm

    return model_shapes(lambda: timm.create_model("hiera_tiny_224", pretrained=False))


def write_random_safetensors(dest: Path, shapes: list[tuple[str, tuple[int, ...]]], seed: int) -> None:
    """A float32 safetensors file with random values, one tensor in memory at a time."""
    tensors = [OutputTensor(k, "F32", s, RawBytes(dest, 0, 4 * math.prod(s))) for k, s in shapes]  # sizes only
    generator = torch.Generator().manual_seed(seed)
    with atomic_file(dest) as out:
        out.write(safetensors_header(tensors, {"format": "pt"}))
        for _, shape in shapes:
            values = torch.randn(shape, generator=generator) * 0.02
            out.write(memoryview(values.reshape(-1).numpy()))


def write_torch_copy(source: Path, dest: Path) -> None:
    """The same state dict as a flat torch zip file (as segment_anything ships it), read through a mmap."""
    entries, _ = read_header(source)
    data = np.memmap(source, dtype=np.uint8, mode="c")  # copy-on-write: writable views, no copy made
    state = {
        key: torch.from_numpy(data[e.start : e.end].view(np.float32).reshape(e.shape)) for key, e in entries.items()
    }
    torch.save(state, dest)


def write_shards(source: Path, folder: Path, shards: int) -> None:
    """``source`` split into ``shards`` safetensors files of about equal size, with the index transformers writes."""
    entries, _ = read_header(source)
    total = sum(e.nbytes for e in entries.values())
    groups: list[list[OutputTensor]] = [[] for _ in range(shards)]
    done = 0
    for key, e in entries.items():
        groups[min(shards - 1, done * shards // total)].append(
            OutputTensor(key, "F32", tuple(e.shape), RawBytes(source, e.start, e.nbytes))
        )
        done += e.nbytes
    weight_map = {}
    for i, group in enumerate(groups, 1):
        name = f"model-{i:05d}-of-{shards:05d}.safetensors"
        write_safetensors(folder / name, group, {"format": "pt"})
        weight_map.update(dict.fromkeys((t.name for t in group), name))
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def prepare(cache: Path) -> dict[str, Path]:
    """Generate the cached inputs that are missing; return their paths."""
    cache.mkdir(parents=True, exist_ok=True)
    sam = cache / "sam_vit_h.safetensors"
    sam_pth = cache / "sam_vit_h.pth"
    sharded = cache / "sam_vit_h_sharded"
    zoo = cache / "zoo"
    if not sam.exists():
        print(f"generating {sam} ...", file=sys.stderr)
        write_random_safetensors(sam, sam_vit_h_shapes(), seed=0)
    if not sam_pth.exists():
        print(f"generating {sam_pth} ...", file=sys.stderr)
        write_torch_copy(sam, sam_pth)
    if not (sharded / "model.safetensors.index.json").exists():
        print(f"generating {sharded} ...", file=sys.stderr)
        write_shards(sam, sharded, SHARDS)
    if not (zoo / f"{ZOO_SIZE - 1:02d}" / "model.safetensors").exists():
        print(f"generating {zoo} ({ZOO_SIZE} hiera_tiny_224-shaped checkpoints) ...", file=sys.stderr)
        shapes = hiera_tiny_shapes()
        for i in range(ZOO_SIZE):
            write_random_safetensors(zoo / f"{i:02d}" / "model.safetensors", shapes, seed=i + 1)
    return {"sam": sam, "sam_pth": sam_pth, "sharded": sharded, "zoo": zoo}


# ---------------------------------------------------------------------------------------------- measuring


@dataclass
class Case:
    """One command to time; ``output`` is removed after every run."""

    name: str
    argv: list[str]
    output: Path | None
    versus: str | None = None  # the case this one is compared with, besides cp + sync (the naive route, torch)
    pythonpath: Path | None = None  # a package tree to import instead of the installed one
    env: dict[str, str] = field(default_factory=dict)  # set for this command


@dataclass
class Sample:
    seconds: float
    peak_rss: int  # bytes


def run_child(case: Case) -> Sample:
    """Run ``case`` through ``LAUNCH``; its wall time and its own peak RSS."""
    # Python caches compiled modules as a user's install does: a PYTHONDONTWRITEBYTECODE in this shell would have
    # every run compile the package from source again (0.1-0.2 s a start on this machine), which no user pays.
    inherited = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env = {**inherited, **case.env, **({"PYTHONPATH": str(case.pythonpath)} if case.pythonpath else {})}
    with tempfile.TemporaryFile() as err:
        launcher = subprocess.run(
            [sys.executable, "-S", "-c", LAUNCH, *case.argv], stdout=subprocess.PIPE, stderr=err, cwd=REPO, env=env
        )
        seconds, peak_rss, status = launcher.stdout.split()
        if launcher.returncode or int(status):
            err.seek(0)
            raise SystemExit(f"{case.name} failed ({status}): {err.read().decode(errors='replace')[-2000:]}")
    return Sample(float(seconds), int(peak_rss))


def remove(path: Path | None) -> None:
    if path is None or not path.exists():
        return
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


def measure(cases: list[Case], runs: int) -> dict[str, list[Sample]]:
    """One warm-up round, then ``runs`` rounds; within a round every case runs once, in turn."""
    samples: dict[str, list[Sample]] = {c.name: [] for c in cases}
    for round_ in range(runs + 1):
        for case in cases:
            remove(case.output)
            os.sync()  # start each run without someone else's dirty pages to write back
            sample = run_child(case)
            if round_:
                samples[case.name].append(sample)
            remove(case.output)
        print(f"  round {round_}/{runs} done (load {os.getloadavg()[0]:.2f})", file=sys.stderr)
    return samples


def summarise(cases: list[Case], samples: dict[str, list[Sample]], baseline: str = CP_SYNC) -> list[dict]:
    """Median time and peak RSS per case, as ratios to the median of ``baseline`` and of the case's ``versus``."""
    medians = {name: median_sample(runs) for name, runs in samples.items()}
    base = medians[baseline]
    rows = []
    for case in cases:
        runs, median = samples[case.name], medians[case.name]
        row = {
            "case": case.name,
            "seconds": round(median.seconds, 3),
            "seconds_all": [round(s.seconds, 3) for s in runs],
            "x_cp_sync": round(median.seconds / base.seconds, 2),
            "peak_rss_mb": round(median.peak_rss / MB, 1),
        }
        if case.versus is not None:
            other = medians[case.versus]
            row |= {"versus": case.versus, "x_versus": round(median.seconds / other.seconds, 2),
                    "rss_x_versus": round(median.peak_rss / other.peak_rss, 3)}
        rows.append(row)
    return rows


def median_sample(runs: list[Sample]) -> Sample:
    return Sample(statistics.median(s.seconds for s in runs), int(statistics.median(s.peak_rss for s in runs)))


def time_fit_global(runs: int) -> dict:
    """``fit_global`` of a 64x64x1280 global part to 7x7 through SAM's bicubic resize, in this process."""
    from abswin_convert.maths.absolute_win import fit_global
    from abswin_convert.maths.resize import BICUBIC

    grid = np.random.default_rng(0).standard_normal((64, 64, 1280))
    times = []
    for i in range(runs + 1):
        start = time.perf_counter()
        fit_global(grid, (7, 7), BICUBIC)
        if i:
            times.append(time.perf_counter() - start)
    return {"case": "fit_global 64x64x1280 -> 7x7", "seconds": round(statistics.median(times), 3),
            "seconds_all": [round(t, 3) for t in times], "target_seconds": 1.0}


def zoo_cases(zoo: Path, work: Path, img_size: int, baseline_tree: Path | None) -> list[Case]:
    """Copying the 20 files against converting them with the zoo command."""
    sources = sorted(zoo.iterdir())
    copies = work / "zoo-cp"
    out = work / "zoo-out"
    sync_copies = " ".join(f'"{copies}/{s.name}/model.safetensors"' for s in sources)
    manifest = work / "zoo.toml"
    entries = "".join(
        f'\n[[model]]\nname = "{s.name}"\nsource = "{s / "model.safetensors"}"\nimg_size = [{img_size}]\n' for s in sources
    )
    manifest.write_text(f'[defaults]\nto = "baked"\nout = "{out}"\n{entries}')
    run_zoo = [*CLI, "zoo", str(manifest), "--output", str(out)]
    baseline = [Case("zoo: abswin-convert zoo [baseline tree]", run_zoo, out, pythonpath=baseline_tree.resolve())
                ] if baseline_tree else []
    return [
        Case("zoo: cp -r", ["cp", "-r", str(zoo), str(copies)], copies),
        Case("zoo: cp -r + sync", ["sh", "-c", f'cp -r "{zoo}" "{copies}" && sync {sync_copies}'], copies),
        Case("zoo: abswin-convert zoo", run_zoo, out),
        Case("zoo: abswin-convert zoo, sources never hashed before (hash cache off)", run_zoo, out,
             env={HASH_CACHE_VAR: "off"}),
    ] + baseline


def sam_cases(files: dict[str, Path], work: Path, img_size: int, baseline_tree: Path | None) -> list[Case]:
    sam, sam_pth = files["sam"], files["sam_pth"]
    copy, out, pt_folder = work / "copy.safetensors", work / "out.safetensors", work / "pt"  # out.pt + its sidecar
    grid = str(img_size // 16)
    convert = [*CLI, "convert", "--img-size", str(img_size)]
    to_safetensors = [*convert, "-o", str(out)]
    baseline = [
        Case(f"convert {name} -> safetensors [baseline tree]", [*to_safetensors, str(src)], out, versus,
             baseline_tree.resolve())
        for name, src, versus in (("safetensors", sam, NAIVE_SAFETENSORS), (".pth", sam_pth, NAIVE_PTH))
    ] if baseline_tree else []
    return [
        Case("cp", ["cp", str(sam), str(copy)], copy),
        Case(CP_SYNC, ["sh", "-c", 'cp "$0" "$1" && sync "$1"', str(sam), str(copy)], copy),
        Case(IMPORT_TORCH, [sys.executable, "-c", "import torch"], None),
        Case("abswin-convert --version", [*CLI, "--version"], None, IMPORT_TORCH),
        Case("abswin-convert --help", [*CLI, "--help"], None, IMPORT_TORCH),
        Case("convert safetensors -> safetensors", [*to_safetensors, str(sam)], out, NAIVE_SAFETENSORS),
        Case(FIRST_TIME, [*to_safetensors, str(sam)], out, NAIVE_SAFETENSORS, env={HASH_CACHE_VAR: "off"}),
        Case("convert .pth -> safetensors", [*to_safetensors, str(sam_pth)], out, NAIVE_PTH),
        Case("convert safetensors -> --format pt", [*convert, "--format", "pt", "-o", str(pt_folder / "out.pt"), str(sam)],
             pt_folder, NAIVE_SAFETENSORS),
        Case(SHARDED, [*to_safetensors, str(files["sharded"])], out, NAIVE_SAFETENSORS),
        Case(NAIVE_SAFETENSORS, [sys.executable, "-c", NAIVE, str(sam), str(out), SAM_POS_KEY, grid], out),
        Case(NAIVE_PTH, [sys.executable, "-c", NAIVE, str(sam_pth), str(out), SAM_POS_KEY, grid], out),
    ] + baseline


# ---------------------------------------------------------------------------------------------- report


def table(rows: list[dict]) -> list[str]:
    lines = [
        "| command | median s | x cp+sync | versus | x versus (time) | x versus (peak RSS) | peak RSS MB | target |",
        "|---|---:|---:|---|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['seconds']:.2f} | {r['x_cp_sync']:.2f} | {r.get('versus', '')} | "
            f"{_opt(r.get('x_versus'))} | {_opt(r.get('rss_x_versus'), 3)} | {r['peak_rss_mb']:.0f} | "
            f"{TARGETS.get(r['case'], '')} |"
        )
    return lines


def _opt(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=REPO / ".bench-cache", help="where the inputs are generated once")
    parser.add_argument("--runs", type=int, default=5, help="measured rounds after one warm-up round")
    parser.add_argument("--img-size", type=int, default=1024, help="target size for the SAM conversion")
    parser.add_argument("--zoo-img-size", type=int, default=448, help="target size for the zoo conversions")
    parser.add_argument("--only", choices=["sam", "zoo"], help="measure only the SAM checkpoint, or only the zoo")
    parser.add_argument("--prepare-only", action="store_true", help="generate the inputs, measure nothing")
    parser.add_argument("--baseline-tree", type=Path, help="also time the conversions with DIR/abswin_convert")
    parser.add_argument("--json", action="store_true", help="print a JSON report instead of Markdown")
    parser.add_argument("--save-json", type=Path, help="also write the JSON report to this file")
    args = parser.parse_args()

    files = prepare(args.cache)
    if args.prepare_only:
        return
    work = args.cache / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    # the children remember sources' sha256 here (the warm-up round fills it), not in the user's cache
    os.environ[HASH_CACHE_VAR] = str(work / "sha256.json")
    load_before = os.getloadavg()

    report: dict = {}
    if args.only != "zoo":
        print("SAM ViT-H:", file=sys.stderr)
        cases = sam_cases(files, work, args.img_size, args.baseline_tree)
        report |= {"sam": summarise(cases, measure(cases, args.runs)), "fit_global": time_fit_global(args.runs)}
    if args.only != "sam":
        print("zoo:", file=sys.stderr)
        cases = zoo_cases(files["zoo"], work, args.zoo_img_size, args.baseline_tree)
        report["zoo"] = summarise(cases, measure(cases, args.runs), baseline="zoo: cp -r + sync")
    shutil.rmtree(work, ignore_errors=True)
    report["machine"] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "sam_bytes": files["sam"].stat().st_size,
        "sam_pth_bytes": files["sam_pth"].stat().st_size,
        "runs": args.runs,
    }
    if args.save_json:
        args.save_json.write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print_markdown(report, args)


def print_markdown(report: dict, args: argparse.Namespace) -> None:
    m = report["machine"]
    print(f"SAM ViT-H-shaped checkpoint: {m['sam_bytes'] / 1e9:.2f} GB safetensors, {m['sam_pth_bytes'] / 1e9:.2f} GB "
          f".pth; --img-size {args.img_size}; median of {m['runs']} after a warm-up; {m['cpus']} CPUs, load average "
          f"(1, 5, 15 min) {m['load_average_before']} before, {m['load_average_after']} after; torch {m['torch']}\n")
    if "sam" in report:
        print("\n".join(table(report["sam"])))
        fit = report["fit_global"]
        print(f"\nfit_global 64x64x1280 -> 7x7: {fit['seconds']:.3f} s median (runs {fit['seconds_all']}; target < 1 s)")
    if "zoo" in report:
        print(f"\nZoo of {ZOO_SIZE} hiera_tiny_224-shaped checkpoints ({args.zoo_img_size} px), x cp+sync is x `cp -r + sync`:\n")
        print("\n".join(table(report["zoo"])))


if __name__ == "__main__":
    main()
