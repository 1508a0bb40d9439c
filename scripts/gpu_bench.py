"""GPU figures for issue 12, in one script that fits in 8 minutes on one GPU; writes ``results.json`` and ``results.md``.

1. Eval throughput: images/s of the eval hook (``evaluation.eval.run_eval``) against a plain timm eval loop (the
   same model, data, batch size, bfloat16 autocast and channels_last; a plain DataLoader, no hook machinery).
2. Finetune speed: steps/s of ``evaluation.finetune.run_finetune`` (absolute win, at twice the native size).
3. The toy replication (``scripts/replicate_toy.py``'s functions) at a size the CPU cannot reach: 224 px, whose
   56x56 token grid holds 7x7 mask units of 8x8, with a few thousand MAE steps, then moved to 448 px.
4. SAM mask eval throughput: images/s of the eval hook (``evaluation.masks.run_mask_eval``, box prompts) against a
   plain segment-anything ``SamPredictor`` loop over the same images and prompts (bf16 autocast, all boxes of an
   image in one ``predict_torch`` call, the same IoU, one sync at the end), on drawn-shapes COCO data
   (``evaluation.shapes_coco``); a SAM ViT-B at 1024 px with random weights (speed does not depend on them).

    python scripts/gpu_bench.py --out gpu-results              # on a GPU
    python scripts/gpu_bench.py --smoke --out /tmp/gpu-smoke   # tiny settings, seconds on a CPU: checks the script
    python scripts/gpu_bench.py --smoke --sections sam_eval --out /tmp/gpu-smoke   # some sections only

Each section's settings are below (``FULL`` and ``SMOKE``); a section that fails is recorded with its error and
the others still run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
import traceback
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from PIL import Image
from pycocotools.coco import COCO
from segment_anything import SamPredictor
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from timm.models._hub import save_for_hf
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))  # replicate_toy is a script beside this one
import replicate_toy as toy

from abswin_convert.evaluation.classifier import load_classifier
from abswin_convert.evaluation.data import FASHION_MNIST_DIR, open_dataset
from abswin_convert.evaluation.eval import batch_inputs, prepare, resolve_device, run_eval
from abswin_convert.evaluation.finetune import run_finetune
from abswin_convert.evaluation.masks import best_mask_iou, run_mask_eval
from abswin_convert.evaluation.shapes_coco import write_shapes_coco

DATA = f"fashion-mnist:{FASHION_MNIST_DIR}"
IMAGENET_CFG = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "interpolation": "bicubic",
                "crop_pct": 1.0, "input_size": [3, 224, 224], "license": "apache-2.0", "hf_hub_id": None}
FULL: dict[str, Any] = {
    "arch": "hiera_tiny_224", "model_args": {}, "threads": None, "img_size": 224,
    "eval_rounds": 3, "eval_images": 10000, "eval_batch": 256, "workers": 8,
    "finetune_img_size": 448, "finetune_steps": 200, "finetune_batch": 64,
    "toy_native": 224, "toy_target": 448, "toy_seeds": 2, "toy_train_steps": 1500, "toy_mae_steps": 3000,
    "toy_finetune_steps": 100, "toy_eval_at": "0,25,50,100", "toy_eval_images": 2000, "toy_batch": 128,
    # SAM ViT-B (segment-anything's vit_b builder's sizes); COCO-like images with several instances each
    "sam": {"img_size": 1024, "embed_dim": 768, "depth": 12, "heads": 12, "global": (2, 5, 8, 11), "decoder_dim": 256,
            "decoder_depth": 2, "decoder_mlp": 2048},
    "sam_images": 120, "sam_image_size": (480, 640), "sam_shapes": 6, "sam_rounds": 2,  # 500 x 3 overran 150 s
}
SMOKE: dict[str, Any] = {  # the toy's tiny Hiera everywhere, one thread (the CPU is shared)
    "arch": "hiera_tiny_224", "model_args": toy.MODEL_ARGS | {"in_chans": 3}, "threads": 1, "img_size": 64,
    "eval_rounds": 1, "eval_images": 64, "eval_batch": 32, "workers": 0,
    "finetune_img_size": 128, "finetune_steps": 2, "finetune_batch": 8,
    "toy_native": 64, "toy_target": 128, "toy_seeds": 1, "toy_train_steps": 2, "toy_mae_steps": 2,
    "toy_finetune_steps": 1, "toy_eval_at": "0,1", "toy_eval_images": 32, "toy_batch": 8,
    "sam": {"img_size": 256, "embed_dim": 32, "depth": 2, "heads": 2, "global": (1,), "decoder_dim": 32,
            "decoder_depth": 1, "decoder_mlp": 32},
    "sam_images": 4, "sam_image_size": (96, 128), "sam_shapes": 3, "sam_rounds": 1,
}


def save_checkpoint(folder: Path, s: dict) -> Path:
    """A timm classifier for Fashion-MNIST's 10 classes (random weights: speed does not depend on them)."""
    model = timm.create_model(s["arch"], pretrained=False, num_classes=10, img_size=s["img_size"], **s["model_args"])
    cfg = {**IMAGENET_CFG, "input_size": [3, s["img_size"], s["img_size"]]}
    config = {"pretrained_cfg": cfg, "model_args": s["model_args"]}
    save_for_hf(model, str(folder), model_config=config, safe_serialization=True)
    return folder


def plain_timm_eval(folder: Path, s: dict, device: torch.device) -> dict:
    """What a user writes without the hook: the model, a DataLoader, a loop; images/s over the loop."""
    classifier = prepare(load_classifier(folder, s["img_size"]), device)
    data = torch.utils.data.Subset(open_dataset(DATA, "eval", classifier.preprocess.geometry), range(s["eval_images"]))
    loader = DataLoader(data, batch_size=s["eval_batch"], num_workers=s["workers"], pin_memory=device.type == "cuda")
    correct, count = torch.zeros((), dtype=torch.long, device=device), 0
    start = time.perf_counter()
    with torch.inference_mode():
        for images, labels in loader:
            x = batch_inputs(classifier, images, device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = classifier.model(x)
            correct += (logits.argmax(dim=1) == labels.to(device)).sum()
            count += len(labels)
    top1 = float(correct) / count  # the one sync
    seconds = time.perf_counter() - start
    return {"images": count, "seconds": round(seconds, 3), "images_per_s": round(count / seconds, 1), "top1": top1}


def eval_section(work: Path, s: dict, device: torch.device) -> dict:
    folder = save_checkpoint(work / "eval-model", s)
    hook = lambda: run_eval(folder, DATA, s["img_size"], str(device), s["eval_batch"], s["eval_images"],  # noqa: E731
                            s["workers"], progress=False)
    plain = lambda: plain_timm_eval(folder, s, device)  # noqa: E731
    hook(), plain()  # warm-up: CUDA context, kernels, the page cache
    rounds = [(hook(), plain()) for _ in range(s["eval_rounds"])]  # alternating
    hook_best = max(r[0]["images_per_s"] for r in rounds)
    plain_best = max(r[1]["images_per_s"] for r in rounds)
    return {"hook_images_per_s": hook_best, "plain_images_per_s": plain_best,
            "hook_over_plain": round(hook_best / plain_best, 3), "rounds": rounds}


def finetune_section(work: Path, s: dict, device: torch.device) -> dict:
    folder = save_checkpoint(work / "finetune-model", s)
    report = run_finetune(folder, DATA, s["finetune_img_size"], s["finetune_steps"], "abswin", work / "finetuned",
                          batch_size=s["finetune_batch"], device=str(device), eval_limit=s["eval_images"],
                          progress=False)
    return {key: report[key] for key in ("img_size", "steps", "batch_size", "steps_per_s", "train_seconds")}


def toy_section(work: Path, s: dict, device: torch.device) -> dict:
    # The toy's sizes are module constants that its functions read when called: set them for this run.
    toy.NATIVE, toy.TARGET = s["toy_native"], s["toy_target"]
    toy.PRETRAINED_CFG["input_size"] = [1, s["toy_native"], s["toy_native"]]
    args = toy.parse_defaults()
    args.seeds, args.train_steps, args.mae_steps = s["toy_seeds"], s["toy_train_steps"], s["toy_mae_steps"]
    args.finetune_steps, args.eval_images = s["toy_finetune_steps"], s["toy_eval_images"]
    args.batch_size = args.finetune_batch_size = s["toy_batch"]
    eval_at = sorted(int(step) for step in s["toy_eval_at"].split(","))
    runs = []
    for seed in range(args.seeds):
        for arm in ("supervised", "mae"):
            run = toy.Run(arm, seed)
            start = time.perf_counter()
            toy.transfer(run, toy.pretrain(run, args, device, work), args, device, eval_at)
            runs.append({"arm": arm, "seed": seed, "native_top1": run.native_top1, "curves": run.curves,
                         "energy": run.energy, "seconds": round(time.perf_counter() - start, 1)})
    return {"native": toy.NATIVE, "target": toy.TARGET, "eval_at": eval_at, "runs": runs,
            "settings": {k: v for k, v in vars(args).items() if k not in ("out", "save_example")}}


def sam_model(a: dict) -> Sam:
    """segment-anything's Sam with the sizes ``a`` gives, built as its registry's builders build it (8 decoder heads,
    14x14 windows); the upstream init."""
    grid = a["img_size"] // 16
    encoder = ImageEncoderViT(
        img_size=a["img_size"], patch_size=16, embed_dim=a["embed_dim"], depth=a["depth"], num_heads=a["heads"],
        out_chans=a["decoder_dim"], qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True,
        global_attn_indexes=a["global"], window_size=14,
    )
    prompt = PromptEncoder(embed_dim=a["decoder_dim"], image_embedding_size=(grid, grid),
                           input_image_size=(a["img_size"], a["img_size"]), mask_in_chans=16)
    transformer = TwoWayTransformer(depth=a["decoder_depth"], embedding_dim=a["decoder_dim"], mlp_dim=a["decoder_mlp"],
                                    num_heads=8)
    decoder = MaskDecoder(transformer_dim=a["decoder_dim"], transformer=transformer, num_multimask_outputs=3,
                          iou_head_depth=3, iou_head_hidden_dim=a["decoder_dim"])
    return Sam(encoder, prompt, decoder).eval()


def plain_sam_loop(model: Sam, annotations: Path, s: dict, device: torch.device) -> dict:
    """What a user writes with segment-anything's own predictor: per image, ``set_image`` and one ``predict_torch``
    for all its boxes, the best of three masks by predicted IoU; images/s over the loop."""
    predictor = SamPredictor(model.to(device))
    with contextlib.redirect_stdout(sys.stderr):  # pycocotools reports its loading on stdout
        coco = COCO(str(annotations))
    cuda = device.type == "cuda"
    ious = []
    start = time.perf_counter()
    for info in coco.loadImgs(sorted(coco.getImgIds())[: s["sam_images"]]):
        image = np.array(Image.open(annotations.parent / info["file_name"]).convert("RGB"))
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=[info["id"]])) if a["area"] >= 1]
        truth = torch.from_numpy(np.stack([coco.annToMask(a) for a in anns]).astype(bool)).to(device)
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], device=device)
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            predictor.set_image(image)
            masks, scores, _ = predictor.predict_torch(None, None, predictor.transform.apply_boxes_torch(boxes, image.shape[:2]),
                                                       multimask_output=True)
            ious.append(best_mask_iou(masks, scores, truth))
    miou = float(torch.cat(ious).mean())  # the one sync
    seconds = time.perf_counter() - start
    images = len(ious)
    return {"images": images, "seconds": round(seconds, 3), "images_per_s": round(images / seconds, 2), "miou": miou}


def sam_eval_section(work: Path, s: dict, device: torch.device) -> dict:
    annotations = write_shapes_coco(work / "shapes", s["sam_images"], s["sam_image_size"], shapes_per_image=s["sam_shapes"])
    torch.manual_seed(0)
    model = sam_model(s["sam"])
    path = work / "sam.pth"
    torch.save(model.state_dict(), path)
    data, size = f"coco:{annotations}", s["sam"]["img_size"]
    hook = lambda: run_mask_eval(path, data, size, "box", str(device), workers=s["workers"], progress=False)  # noqa: E731
    plain = lambda: plain_sam_loop(model, annotations, s, device)  # noqa: E731
    hook(), plain()  # warm-up: CUDA context, kernels, the page cache
    rounds = [(hook(), plain()) for _ in range(s["sam_rounds"])]  # alternating
    hook_best = max(r[0]["images_per_s"] for r in rounds)
    plain_best = max(r[1]["images_per_s"] for r in rounds)
    return {"img_size": size, "images": rounds[0][0]["images"], "instances": rounds[0][0]["instances"],
            "hook_images_per_s": hook_best, "plain_images_per_s": plain_best,
            "hook_over_plain": round(hook_best / plain_best, 3), "hook_miou": rounds[0][0]["miou"],
            "plain_miou": rounds[0][1]["miou"], "rounds": rounds}


def markdown(results: dict) -> str:
    """The sections that ran, one line each (the toy replication as a table)."""
    lines = [f"# GPU figures ({results['device']}, {results['mode']}, {results['minutes']} min)", ""]
    for name, line in (("eval", eval_line), ("finetune", finetune_line), ("sam_eval", sam_eval_line)):
        if name in results:
            lines.append(f"- {name}: failed: {results[name]['error']}" if "error" in results[name] else line(results[name]))
    if "toy" in results:
        lines += toy_lines(results["toy"])
    return "\n".join(lines) + "\n"


def eval_line(ev: dict) -> str:
    return (f"- eval images/s: hook {ev['hook_images_per_s']}, plain timm loop {ev['plain_images_per_s']} "
            f"(hook / plain = {ev['hook_over_plain']}; best of {len(ev['rounds'])} alternating rounds after a warm-up)")


def finetune_line(ft: dict) -> str:
    return (f"- finetune at {ft['img_size']} px, batch {ft['batch_size']}: {ft['steps_per_s']} steps/s "
            f"({ft['steps']} steps in {ft['train_seconds']} s)")


def sam_eval_line(sam: dict) -> str:
    return (f"- SAM mask eval images/s ({sam['img_size']} px, {sam['images']} images, {sam['instances']} boxes): hook "
            f"{sam['hook_images_per_s']}, plain SamPredictor loop {sam['plain_images_per_s']} (hook / plain = "
            f"{sam['hook_over_plain']}; best of {len(sam['rounds'])} alternating rounds after a warm-up); "
            f"mIoU hook {sam['hook_miou']:.2f}, plain {sam['plain_miou']:.2f}")


def toy_lines(toy_result: dict) -> list[str]:
    if "error" in toy_result:
        return [f"- toy replication: failed: {toy_result['error']}"]
    last = toy_result["eval_at"][-1]
    lines = ["", f"Toy replication at {toy_result['native']} px -> {toy_result['target']} px (top-1, Fashion-MNIST):", "",
             f"| arm | seed | @{toy_result['native']} | naive 0 | abswin 0 | naive {last} | abswin {last} | s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in toy_result["runs"]:
        naive, abswin = r["curves"]["naive"], r["curves"]["abswin"]
        lines.append(f"| {r['arm']} | {r['seed']} | {r['native_top1']:.3f} | {naive[0]:.3f} | {abswin[0]:.3f} "
                     f"| {naive[last]:.3f} | {abswin[last]:.3f} | {r['seconds']} |")
    return lines


SECTIONS = {"eval": eval_section, "finetune": finetune_section, "sam_eval": sam_eval_section, "toy": toy_section}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for results.json and results.md")
    parser.add_argument("--smoke", action="store_true", help="tiny settings that run in seconds on a CPU")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    args = parser.parse_args()
    chosen = args.sections.split(",")
    if unknown := sorted(set(chosen) - set(SECTIONS)):
        raise SystemExit(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    settings = SMOKE if args.smoke else FULL
    device = resolve_device(args.device)
    if settings["threads"]:
        torch.set_num_threads(settings["threads"])
    if device.type == "cpu" and not args.smoke:
        raise SystemExit("no GPU here: the full settings are for a GPU; use --smoke to check the script on a CPU")
    start = time.perf_counter()
    results: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                     "mode": "smoke" if args.smoke else "full", "settings": settings, "torch": torch.__version__}
    with tempfile.TemporaryDirectory(prefix="abswin-gpu-bench-") as tmp:
        for name in chosen:
            section = SECTIONS[name]
            work = Path(tmp) / name
            work.mkdir()
            section_start = time.perf_counter()
            try:
                results[name] = section(work, settings, device)
            except Exception as exc:  # record it and go on: one broken section should not cost the others' figures
                results[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            results[name]["section_seconds"] = round(time.perf_counter() - section_start, 1)
            print(f"{name}: {round(time.perf_counter() - section_start, 1)} s", file=sys.stderr, flush=True)
    results["minutes"] = round((time.perf_counter() - start) / 60, 2)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (args.out / "results.md").write_text(markdown(results))
    print(markdown(results))
    if any("error" in results[name] for name in chosen):
        sys.exit(1)


if __name__ == "__main__":
    main()
