"""A short finetune at a new input size, from the naive-resized embedding or from absolute win, then eval.

``--pos naive`` resizes the whole learned embedding to the new token grid, as every loader does today.
``--pos abswin`` splits it into window and global parts and builds timm's absolute-win Hiera, so the two parts
are separate parameters and train separately, as the paper trains them. On CUDA the steps run in bf16 autocast
with channels_last inputs, and the loss stays on the device until the end.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .. import families
from ..errors import AbswinError
from ..families import hiera
from ..families.base import TIMM_WINDOW_KEY, nchw, output_grid, read_parts, read_position
from ..io.jsonfile import write_json
from ..io.outputs import folder_paths
from ..io.provenance import output_metadata, public_name
from ..io.tensors import RawTensor
from ..io.torch_bridge import from_torch, to_torch, torch_state_dict
from ..io.writer import OutputTensor, check_destination, write_safetensors
from ..maths import absolute_win as aw
from ..maths.grid import format_size
from ..runtimes import timm as timm_runtime
from ..vocabulary import TIMM_ABSWIN
from .classifier import Classifier, open_with_config, runtime_of, timm_preprocess
from .data import open_dataset
from .eval import batch_inputs, evaluate, make_loader, prepare, resolve_device

POSITIONS = ("naive", "abswin")


def start_model(checkpoint: str | Path, img_size: int, pos: str) -> Classifier:
    """The checkpoint as a timm classifier at ``img_size``, its position embedding set up per ``pos``."""
    if pos not in POSITIONS:
        raise AbswinError(f"unknown --pos {pos!r}; use naive or abswin")
    ckpt = open_with_config(checkpoint)
    config = ckpt.config or {}
    if runtime_of(config) != "timm":
        raise AbswinError("finetune builds timm models; give it a timm checkpoint (config.json with architecture)")
    det = families.detect(ckpt, hiera.NAME)  # finetune builds timm Hiera; anything else is refused here
    out_grid = output_grid(det, (img_size, img_size))
    state = torch_state_dict(ckpt)
    dtype = ckpt.dtype(det.pos_key)
    if pos == "abswin":
        parts, _ = read_parts(ckpt, det, None)
        state["pos_embed"] = to_torch(RawTensor.encode(nchw(parts.global_), dtype))
        state[TIMM_WINDOW_KEY] = to_torch(RawTensor.encode(nchw(parts.window), dtype))
    else:
        if det.spelling == TIMM_ABSWIN:
            raise AbswinError("--pos naive needs one flat position embedding; this checkpoint is already split (timm abswin)")
        resized = aw.naive(read_position(ckpt, det).grid, out_grid, det.resize)
        state["pos_embed"] = to_torch(RawTensor.encode(resized.reshape(1, -1, resized.shape[-1]), dtype))
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    model = timm_runtime.create(config["architecture"], timm_runtime.model_kwargs(config, img_size, shapes), state)
    return Classifier(model, timm_preprocess(config, img_size), "timm", int(config["num_classes"]), config)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices only; never on position embeddings, norms or biases (timm's rule)."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in model.named_parameters():
        (no_decay if param.ndim <= 1 or "pos_embed" in name else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _forever(loader: DataLoader) -> Iterator:
    while True:
        yield from loader


def train(classifier: Classifier, loader: DataLoader, steps: int, lr: float, device: torch.device,
          weight_decay: float = 0.05, warmup: int | None = None, cosine: bool = False, eval_at: Sequence[int] = (),
          on_eval: Callable[[int], None] | None = None, progress: bool = False) -> dict:
    """``steps`` AdamW steps, linear warmup then constant ``lr`` (or a cosine decay to 0); ``on_eval(step)`` runs
    after each step in ``eval_at`` (0 = before training). Returns the mean training loss and the speed.
    ``progress``: a bar on stderr, when it is a terminal (no loss on it: that would cost a host sync per step)."""
    from tqdm.auto import tqdm

    model = classifier.model
    warmup = max(1, steps // 10) if warmup is None else warmup
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, warmup, steps, cosine))
    cuda = device.type == "cuda"
    loss_sum = torch.zeros((), device=device)
    if on_eval and 0 in eval_at:
        on_eval(0)
    start = time.perf_counter()
    batches = _forever(loader)
    for step in tqdm(range(1, steps + 1), desc="finetune", unit="step", disable=None if progress else True, leave=False):
        model.train()
        images, labels = next(batches)
        x = batch_inputs(classifier, images, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = F.cross_entropy(classifier(x).float(), labels.to(device, non_blocking=cuda))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        loss_sum += loss.detach()
        if on_eval and step in eval_at:
            on_eval(step)
    model.eval()
    seconds = time.perf_counter() - start
    mean_loss = float(loss_sum) / steps if steps else math.nan
    speed = round(steps / seconds, 3) if steps else None
    return {"train_loss": mean_loss, "train_seconds": round(seconds, 3), "steps_per_s": speed}


def _lr_factor(step: int, warmup: int, steps: int, cosine: bool) -> float:
    if step < warmup:
        return (step + 1) / warmup
    if not cosine:
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def run_finetune(checkpoint: str | Path, data: str, img_size: int, steps: int, pos: str, output: str | Path,
                 lr: float = 1e-4, batch_size: int = 32, device: str = "auto", seed: int = 0,
                 eval_limit: int | None = None, force: bool = False, progress: bool = True) -> dict:
    """``abswin-convert finetune``: finetune at ``img_size``, evaluate, write ``output/model.safetensors`` +
    ``config.json``; returns the metrics."""
    if steps < 0:
        raise AbswinError(f"--steps must be 0 or more, got {steps}")
    out = Path(output)
    weights, config_path = folder_paths(out)
    source = open_with_config(checkpoint).path
    check_destination(weights, [source], force)
    dev = resolve_device(device)
    torch.manual_seed(seed)
    classifier = prepare(start_model(checkpoint, img_size, pos), dev)
    train_set = open_dataset(data, "train", classifier.preprocess.geometry)
    eval_set = open_dataset(data, "eval", classifier.preprocess.geometry)
    fit = train(classifier, make_loader(train_set, batch_size, dev, shuffle=True, seed=seed), steps, lr, dev, progress=progress)
    metrics = evaluate(classifier, make_loader(eval_set, max(batch_size, 64), dev, limit=eval_limit), dev, progress)
    report = {"checkpoint": str(checkpoint), "data": data, "img_size": img_size, "pos": pos, "steps": steps, "lr": lr,
              "batch_size": batch_size, "seed": seed, "device": str(dev), **fit, **metrics}
    stats = {"finetune." + k: str(report[k]) for k in ("pos", "steps", "lr", "seed", "top1", "loss")}
    stats["finetune.data"] = public_name(data)
    stats["img_size"] = format_size((img_size, img_size))  # what hooks read as the checkpoint's size
    save_timm(classifier, img_size, weights, config_path, output_metadata(checkpoint, source, stats))
    return {**report, "output": str(out)}


def save_timm(classifier: Classifier, img_size: int, weights: Path, config_path: Path, metadata: dict[str, str]) -> None:
    """Write the model's state and a timm ``config.json`` that rebuilds it at ``img_size``."""
    state = {k: from_torch(v) for k, v in classifier.model.state_dict().items()}
    write_safetensors(weights, [OutputTensor(k, v.dtype, v.shape, v.raw) for k, v in state.items()], metadata)
    size = (img_size, img_size)
    split = (state["pos_embed"].shape[-2], state["pos_embed"].shape[-1]) if TIMM_WINDOW_KEY in state else None
    config = timm_runtime.resized_config(classifier.config, size, img_size=list(size), **timm_runtime.abswin_args(split))
    config.setdefault("pretrained_cfg", {})["input_size"] = [classifier.preprocess.channels, *size]
    write_json(config_path, config)
