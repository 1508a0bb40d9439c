"""Mask mIoU of SAM and SAM2 checkpoints on a COCO-format data set the tests draw (exact masks, real COCO JSON and
PNG files): against IoUs computed here through the upstream predictors, the same for a source and its conversion at
the native size, independent of how many prompts go in one batch."""

from __future__ import annotations

import json
import re
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from pycocotools.coco import COCO
from sam2.sam2_image_predictor import SAM2ImagePredictor
from segment_anything import SamPredictor
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from abswin_convert.demo import example_path  # the shipped Hiera classifier folder
from abswin_convert.evaluation.coco import CocoInstances, interior_point, parse_coco_spec
from abswin_convert.evaluation.eval import make_loader, run_eval
from abswin_convert.evaluation.hooks import run_hook
from abswin_convert.evaluation.masks import evaluate_masks, only_sample
from abswin_convert.evaluation.segmenters import load_segmenter
from abswin_convert.evaluation.shapes_coco import write_shapes_coco
from abswin_convert.runtimes import sam2 as sam2_runtime
from tests.random_weights import randomize

SIZE = {"sam": 256, "sam2": 128}  # native input sizes: small; SAM's 16-token grid pads its 14-token windows
IMAGES = {"sam": 4, "sam2": 2}  # the sam2 model is its release's tiny one, 39M parameters: two images


def tiny_sam() -> Sam:
    """segment-anything's Sam, tiny, with its builders' decoder heads (8); a 32-wide decoder, whose random masks
    vary with the prompt (narrower ones come out all-on or all-off)."""
    size = SIZE["sam"]
    grid = size // 16
    encoder = ImageEncoderViT(
        img_size=size, patch_size=16, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2, out_chans=32, qkv_bias=True,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True, global_attn_indexes=(1,), window_size=14,
    )
    prompt = PromptEncoder(embed_dim=32, image_embedding_size=(grid, grid), input_image_size=(size, size), mask_in_chans=4)
    decoder = MaskDecoder(transformer_dim=32, transformer=TwoWayTransformer(depth=1, embedding_dim=32, mlp_dim=32, num_heads=8),
                          num_multimask_outputs=3, iou_head_depth=2, iou_head_hidden_dim=16)
    return randomize(Sam(encoder, prompt, decoder))


def tiny_sam2() -> torch.nn.Module:
    """sam2's own SAM 2.1 tiny config, built for a small size as build_sam2 builds it, random weights."""
    cfg = OmegaConf.load(next(p for p in sam2_runtime._config_files() if p.stem == "sam2.1_hiera_t"))
    cfg.model.image_size = SIZE["sam2"]
    torch.manual_seed(0)
    return randomize(instantiate(cfg.model, _recursive_=True))


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> str:
    return f"coco:{write_shapes_coco(tmp_path_factory.mktemp('shapes'), images=4)}"


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """``sources(kind)``: (model, checkpoint path) as each project ships its checkpoints, built once per kind."""
    cache: dict[str, tuple[torch.nn.Module, Path]] = {}

    def get(kind: str) -> tuple[torch.nn.Module, Path]:
        if kind not in cache:
            folder = tmp_path_factory.mktemp(kind)
            if kind == "sam":
                model, path = tiny_sam(), folder / "sam_vit_tiny.pth"
                torch.save(model.state_dict(), path)  # the official release: a flat state dict
            else:
                model, path = tiny_sam2(), folder / "sam2.1_hiera_tiny.pt"
                torch.save({"model": model.state_dict()}, path)
            cache[kind] = model, path
        return cache[kind]

    return get


@pytest.fixture(scope="module")
def measured(sources, coco):
    """``measured(kind)``: the source's box mIoU with all of an image's prompts in one batch and one at a time,
    from one build of the model."""
    cache: dict[str, tuple[dict, dict]] = {}

    def get(kind: str) -> tuple[dict, dict]:
        if kind not in cache:
            segmenter = load_segmenter(sources(kind)[1], SIZE[kind])
            loader = make_loader(CocoInstances(parse_coco_spec(coco), "box", segmenter.host_transform), 1, torch.device("cpu"),
                                 limit=IMAGES[kind], collate_fn=only_sample)
            cache[kind] = tuple(evaluate_masks(segmenter, loader, torch.device("cpu"), "box", batch, progress=False)
                                for batch in (None, 1))  # type: ignore[assignment]
        return cache[kind]

    return get


def ground_truth(spec: str, limit: int) -> list[tuple[np.ndarray, list[dict], COCO]]:
    """The first ``limit`` images by id: RGB pixels and annotations, read here with pycocotools."""
    annotations = Path(spec.removeprefix("coco:"))
    coco = COCO(str(annotations))
    images = []
    for info in coco.loadImgs(sorted(coco.getImgIds())[:limit]):
        pixels = np.asarray(Image.open(annotations.parent / info["file_name"]).convert("RGB"))
        images.append((pixels, coco.loadAnns(coco.getAnnIds(imgIds=[info["id"]])), coco))
    return images


def farthest_inside(mask: np.ndarray) -> tuple[int, int]:
    """The first (row-major) mask pixel whose nearest outside pixel is farthest, by brute force over the outside
    pixels that touch the mask (the nearest outside pixel always does) and the frame around the image."""
    padded = np.pad(mask, 1)
    touching = ~padded & (np.roll(padded, 1, 0) | np.roll(padded, -1, 0) | np.roll(padded, 1, 1) | np.roll(padded, -1, 1))
    oy, ox = np.nonzero(touching)
    iy, ix = np.nonzero(padded)
    nearest = ((iy[:, None] - oy[None]) ** 2 + (ix[:, None] - ox[None]) ** 2).min(axis=1)
    best = int(np.argmax(nearest))  # nonzero() is row-major: the first of the farthest
    return int(ix[best] - 1), int(iy[best] - 1)


def reference_ious(kind: str, model: torch.nn.Module, spec: str, prompt: str) -> list[float]:
    """Per instance, one prompt at a time through the project's own predictor, the best of three masks by
    predicted IoU, and its IoU in percent computed with numpy."""
    predictor = SamPredictor(model) if kind == "sam" else SAM2ImagePredictor(model)
    if kind == "sam2":
        predictor._bb_feat_sizes = [(SIZE[kind] // s, SIZE[kind] // s) for s in (4, 8, 16)]  # it assumes 1024 px
    ious = []
    for pixels, instances, coco in ground_truth(spec, IMAGES[kind]):
        predictor.set_image(pixels)
        for ann in instances:
            truth = coco.annToMask(ann).astype(bool)
            x, y, w, h = ann["bbox"]
            if prompt == "box":
                masks, scores, _ = predictor.predict(box=np.array([x, y, x + w, y + h]), multimask_output=True)
            else:
                masks, scores, _ = predictor.predict(point_coords=np.array([farthest_inside(truth)], dtype=float),
                                                     point_labels=np.array([1]), multimask_output=True)
            best = masks[int(np.argmax(scores))].astype(bool)
            ious.append(np.count_nonzero(best & truth) / (np.count_nonzero(best | truth) + 1e-7) * 100)
    return ious


def assert_agrees(result: dict, expected: list[float]) -> None:
    assert result["instances"] == len(expected)
    assert 1 < result["miou"] < 99 and len({round(v, 3) for v in expected}) > 3  # masks that vary: not a trivial 0
    assert result["miou"] == pytest.approx(float(np.mean(expected)), abs=1e-9)


@pytest.mark.parametrize("kind", ["sam", "sam2"])
def test_box_miou_agrees_with_ious_computed_through_the_upstream_predictor(sources, measured, coco, kind):
    whole, _ = measured(kind)
    assert whole["images"] == IMAGES[kind]
    assert_agrees(whole, reference_ious(kind, sources(kind)[0], coco, "box"))


def test_point_miou_agrees_with_ious_computed_through_the_upstream_predictor(sources, coco):
    model, path = sources("sam")
    result = run_eval(path, coco, device="cpu", prompt="point", progress=False)
    assert result["img_size"] == SIZE["sam"] and result["prompt"] == "point"
    assert result["runtime"].startswith("segment-anything")
    assert_agrees(result, reference_ious("sam", model, coco, "point"))


@pytest.mark.parametrize("kind", ["sam", "sam2"])
def test_results_do_not_depend_on_the_prompt_batch(measured, kind):
    whole, one_by_one = measured(kind)
    for key in ("miou", "miou_small", "miou_medium", "instances"):
        assert one_by_one[key] == pytest.approx(whole[key], abs=1e-6)


@pytest.mark.parametrize("kind", ["sam", "sam2"])
def test_source_and_its_conversion_at_the_native_size_score_the_same(sources, measured, coco, cli, tmp_path, kind):
    _, source = sources(kind)
    output = tmp_path / source.name.replace(".", "_native.", 1)
    converted = cli("convert", source, "-o", output, "--img-size", SIZE[kind], "--format", "pt")
    assert converted.exit_code == 0, converted.output
    # the output's size comes from its provenance (the .pt's sidecar)
    result = cli("eval", output, "--data", coco, "--device", "cpu", "--eval-limit", IMAGES[kind], "--json")
    assert result.exit_code == 0, result.output
    from_output, from_source = json.loads(result.stdout), measured(kind)[0]
    assert from_output["img_size"] == SIZE[kind]
    assert from_output["miou"] == from_source["miou"] and from_output["instances"] == from_source["instances"]


def test_a_training_checkpoint_with_a_ddp_prefix_scores_as_the_plain_one(sources, measured, coco, tmp_path):
    model, _ = sources("sam")
    path = tmp_path / "sam_finetune_epoch3.pth"
    torch.save({"model": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 3}, path)
    result = run_eval(path, coco, device="cpu", limit=IMAGES["sam"], progress=False)
    assert result["miou"] == measured("sam")[0]["miou"]


def test_an_output_for_a_larger_size_is_built_and_evaluated_there(sources, coco, cli, tmp_path):
    _, source = sources("sam")
    output = tmp_path / "sam_512.pth"
    assert cli("convert", source, "-o", output, "--img-size", 512, "--format", "pt").exit_code == 0
    result = run_eval(output, coco, device="cpu", limit=2, progress=False)  # the size from the provenance
    assert result["img_size"] == 512 and 0 < result["miou"] < 100


def test_the_eval_hook_measures_masks_for_a_zoo(sources, coco, tmp_path, cli):
    _, source = sources("sam")
    output = tmp_path / "sam_native.pth"
    assert cli("convert", source, "-o", output, "--img-size", SIZE["sam"], "--format", "pt").exit_code == 0
    result = run_hook("eval", output, {"data": coco, "device": "cpu", "limit": 2, "progress": False})
    assert result["images"] == 2 and result["img_size"] == SIZE["sam"] and 0 < result["miou"] < 100


def test_the_cli_prints_the_miou_and_its_area_ranges(sources, coco, cli):
    _, source = sources("sam")
    result = cli("eval", source, "--data", coco, "--device", "cpu", "--eval-limit", 1)
    assert result.exit_code == 0, result.output
    assert "1 images" in result.stdout and "box prompts" in result.stdout and "mIoU " in result.stdout
    assert "large -" in result.stdout  # the drawn shapes are all below 96^2 pixels


@pytest.mark.parametrize(("data", "extra", "message"), [
    ("coco:{tmp}/missing.json", [], "annotations file .*missing.json does not exist"),
    ("coco:{tmp}/annotations.txt", [], "write coco:ANNOTATIONS.json"),
    ("coco:{ann}:{tmp}/no-images", [], "images folder .*no-images does not exist"),
    ("{coco}", ["--img-size", 512], "for 256 px .*not 512; run abswin-convert convert --img-size 512"),
    ("{coco}", ["--prompt", "scribble"], "Invalid value for '--prompt'"),
])
def test_bad_mask_eval_requests_fail_in_one_line(sources, coco, cli, tmp_path, data, extra, message):
    _, source = sources("sam")
    spec = data.format(tmp=tmp_path, coco=coco, ann=coco.removeprefix("coco:"))
    result = cli("eval", source, "--data", spec, "--device", "cpu", *extra)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and re.search(message, result.stderr), result.stderr


def test_a_classifier_is_not_given_masks_and_a_sam_no_classes(coco, cli, tmp_path, sources):
    classifier = cli("eval", example_path(), "--data", coco, "--device", "cpu", "--img-size", 64)
    assert classifier.exit_code == 2 and "the mask eval builds segment-anything .pth and sam2 .pt" in classifier.stderr
    prompt = cli("eval", example_path(), "--data", f"imagefolder:{tmp_path}", "--prompt", "point", "--img-size", 64)
    assert prompt.exit_code == 2 and "--prompt is for the mask eval" in prompt.stderr


def test_the_point_prompt_is_the_pixel_farthest_from_the_outside():
    rng = np.random.default_rng(0)
    for _ in range(50):
        mask = rng.random(tuple(rng.integers(3, 30, 2))) < rng.uniform(0.4, 0.95)
        if mask.any():
            assert interior_point(mask) == farthest_inside(mask)
    ring = np.zeros((9, 9), bool)
    ring[1:8, 1:8] = True
    ring[4, 4] = False  # a hole in the middle: 16 pixels tie at distance 2, the first in row-major order wins
    assert interior_point(ring) == farthest_inside(ring) == (2, 2)


def test_annotations_without_area_or_bbox_and_masks_that_decode_to_nothing_still_count(tmp_path):
    from pycocotools import mask as mask_utils

    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "a.png")
    square = np.zeros((20, 30), np.uint8)
    square[4:10, 6:16] = 1
    rle = mask_utils.encode(np.asfortranarray(square))
    annotations = [
        {"id": 1, "image_id": 7, "category_id": 1, "segmentation": {"size": [20, 30], "counts": rle["counts"].decode()}},
        {"id": 2, "image_id": 7, "category_id": 1, "area": 1.0, "bbox": [20, 2, 4, 4],
         "segmentation": [[21.0, 3.0, 21.0, 3.0, 21.0, 3.0]]},  # a polygon with no inside
        {"id": 3, "image_id": 7, "category_id": 1, "area": 0.0, "bbox": [0, 0, 1, 1], "segmentation": [[0, 0, 1, 0, 1, 1]]},
    ]
    (tmp_path / "ann.json").write_text(json.dumps({
        "images": [{"id": 7, "file_name": "a.png", "height": 20, "width": 30}], "annotations": annotations,
        "categories": [{"id": 1, "name": "thing"}]}))
    spec = parse_coco_spec(f"coco:{tmp_path / 'ann.json'}")
    boxes, points = (CocoInstances(spec, prompt)[0] for prompt in ("box", "point"))
    assert boxes.areas.tolist() == [60.0, 1.0]  # the area-0 instance is left out, as eval_sam_coco leaves it
    assert boxes.prompts.tolist() == [[6, 4, 16, 10], [20, 2, 24, 6]]  # the first from its mask
    assert points.prompts.tolist() == [[8, 6], [22, 4]]  # 3 px from the edge, the first such; the empty mask: its box centre
    assert points.masks.sum(dim=(1, 2)).tolist() == [60, 0]
