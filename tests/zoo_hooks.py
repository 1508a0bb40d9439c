"""Hooks for the zoo tests and scripts/zoo_demo.py, named as ``tests.zoo_hooks:FUNCTION`` in a manifest."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from abswin_convert.io.checkpoint import open_checkpoint


def weight_stats(checkpoint: Path, options: dict) -> dict:
    """How many tensors the output holds and the RMS of its position embedding (real numbers from the file)."""
    ckpt = open_checkpoint(checkpoint)
    pos = ckpt.tensor(options.get("key", "pos_embed")).float64()
    return {"tensors": len(ckpt.keys()), "pos_embed_rms": float(np.sqrt(np.square(pos).mean()))}


def always_fails(checkpoint: Path, options: dict) -> dict:
    """A hook that raises, as a broken evaluation would."""
    raise RuntimeError(f"planned failure on {Path(checkpoint).name}")


def pause(checkpoint: Path, options: dict) -> dict:
    """Take ``seconds`` (a slow evaluation), so a test can interrupt a run while this output is being built."""
    time.sleep(float(options.get("seconds", 1)))
    return {"slept_s": float(options.get("seconds", 1))}


def not_ok(checkpoint: Path, options: dict) -> dict:
    """A check that ran and failed, as the built-in verify hook reports one: ``ok`` false with its problems."""
    return {"ok": False, "problems": [options.get("problem", "the check failed")], "checked": 1}


def pid_then_sleep(checkpoint: Path, options: dict) -> dict:
    """Write this process's pid as a file in ``options["pids"]``, then sleep: a test kills the process meanwhile."""
    Path(options["pids"], str(os.getpid())).touch()
    time.sleep(float(options.get("seconds", 300)))
    return {"slept_s": float(options.get("seconds", 300))}


def names_files(checkpoint: Path, options: dict) -> dict:
    """A hook whose metrics name files and data by their local paths, as eval and finetune do."""
    return {"checkpoint": str(Path(checkpoint).resolve()), "data": str(options["data"]), "top1": 0.5}


def blas_threads(checkpoint: Path, options: dict) -> dict:
    """The thread count of each BLAS library numpy loaded, as the output's hooks see it."""
    from threadpoolctl import threadpool_info

    return {"blas_threads": [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]}
