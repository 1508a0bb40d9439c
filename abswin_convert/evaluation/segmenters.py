"""Promptable segmenters for the mask eval: a SAM or SAM2 checkpoint, built by its runtime, with its runtime's own
preprocessing and prompt handling, predicting a batch of prompts on one image at a time.

- segment-anything: ``ResizeLongestSide`` on the host (in the loader's workers, as ``SamPredictor.set_image``
  does it), then ``SamPredictor.set_torch_image`` (pixel mean/std, pad to a square) and ``predict_torch``.
- sam2: ``SAM2Transforms`` (a square resize to the model's size, ImageNet mean/std) applied on the device, the
  backbone features prepared as ``SAM2ImagePredictor`` prepares them (the no-memory embedding added), the prompt
  encoder and mask decoder run on the batch, and the transforms' ``postprocess_masks`` (to the image size, > 0).

Both give the three multimask outputs and their predicted IoUs; the eval keeps the best-scored mask, as
EfficientViT-SAM's ``eval_sam_coco`` does.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from .. import families
from ..errors import AbswinError
from ..io.checkpoint import open_checkpoint
from ..io.torch_bridge import torch_state_dict

RUNTIMES = {"segment-anything": "segment-anything .pth", "sam2": "sam2 .pt"}  # the spellings the mask eval builds
_MODULES = {"segment-anything": "segment_anything", "sam2": "sam2"}  # spelling -> the package that builds it
MASK_TASK = "mask-generation"  # the families whose models the mask eval measures


class Segmenter(Protocol):
    runtime: str  # the runtime and its version
    img_size: int

    @property
    def host_transform(self) -> Callable[[np.ndarray], torch.Tensor]:
        """uint8 ``[H, W, 3]`` -> what ``set_image`` takes; small enough to send to the loader's worker processes."""

    def to(self, device: torch.device) -> None:
        """Move the model."""

    def set_image(self, image: torch.Tensor, original_size: tuple[int, int]) -> None:
        """Embed one image (``host_transform``'s output, on the device)."""

    def predict(self, boxes: torch.Tensor | None, points: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks ``[N, 3, H, W]`` (bool, at the original size) and their predicted IoUs ``[N, 3]`` for ``N`` boxes
        ``[N, 4]`` (x0 y0 x1 y1) or ``N`` positive points ``[N, 2]`` (x y), in the original image's pixels."""


def load_segmenter(path: str | Path, img_size: int | None = None) -> Segmenter:
    """The SAM or SAM2 checkpoint at ``path`` as a segmenter for ``img_size`` inputs (default: the size its weights
    are for; 1024 for sam2, whose weights do not say)."""
    ckpt, det = families.recognise(open_checkpoint(path))
    if families.ALL[det.family].task != MASK_TASK or det.spelling not in RUNTIMES:
        raise AbswinError(
            f"{path}: a {det.family} checkpoint ({det.spelling}); the mask eval builds {' and '.join(RUNTIMES.values())} "
            "checkpoints (a classifier takes --data fashion-mnist or imagefolder:)"
        )
    if importlib.util.find_spec(_MODULES[det.spelling]) is None:
        raise AbswinError(f"{path}: a {RUNTIMES[det.spelling]} checkpoint; building it needs pip install {det.spelling}")
    state = torch_state_dict(ckpt)
    if det.spelling == "segment-anything":
        return SamSegmenter(state, img_size)
    return Sam2Segmenter(state, img_size)


class LongestSideResize:
    """segment-anything's ``ResizeLongestSide.apply_image`` (Pillow, uint8), channels first; small enough to send to
    the loader's worker processes."""

    def __init__(self, img_size: int) -> None:
        self.img_size = img_size

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        from segment_anything.utils.transforms import ResizeLongestSide

        return channels_first(ResizeLongestSide(self.img_size).apply_image(image))


def channels_first(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous()


class SamSegmenter:
    """segment-anything's ``Sam`` behind its own ``SamPredictor``."""

    def __init__(self, state: dict[str, torch.Tensor], img_size: int | None) -> None:
        from segment_anything import SamPredictor

        from ..runtimes import segment_anything as runtime

        self.model = runtime.build_sam(state, img_size)
        self.img_size = self.model.image_encoder.img_size
        self.runtime = runtime.version()
        self.predictor = SamPredictor(self.model)
        self.host_transform = LongestSideResize(self.img_size)

    def to(self, device: torch.device) -> None:
        self.model.to(device)

    def set_image(self, image: torch.Tensor, original_size: tuple[int, int]) -> None:
        self.predictor.set_torch_image(image[None], original_size)

    def predict(self, boxes: torch.Tensor | None, points: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        size = self.predictor.original_size
        transform = self.predictor.transform
        coords, labels = None, None
        if points is not None:  # one positive point per prompt
            coords = transform.apply_coords_torch(points[:, None, :], size)
            labels = torch.ones(coords.shape[:2], dtype=torch.int, device=coords.device)
        box = None if boxes is None else transform.apply_boxes_torch(boxes, size)
        masks, scores, _ = self.predictor.predict_torch(coords, labels, box, multimask_output=True)
        return masks, scores


class Sam2Segmenter:
    """sam2's ``SAM2Base``: its transforms, backbone, prompt encoder and mask decoder."""

    def __init__(self, state: dict[str, torch.Tensor], img_size: int | None) -> None:
        from sam2.utils.transforms import SAM2Transforms

        from ..runtimes import sam2 as runtime

        self.model = runtime.build_sam2(state, img_size or runtime.NATIVE_SIZE)
        self.img_size = self.model.image_size
        self.runtime = runtime.version()
        self.transforms = SAM2Transforms(resolution=self.img_size, mask_threshold=0.0)
        self._features: dict[str, torch.Tensor | list[torch.Tensor]] = {}
        self._original_size = (0, 0)

        self.host_transform = channels_first  # uint8: resized on the device

    def to(self, device: torch.device) -> None:
        self.model.to(device)

    def set_image(self, image: torch.Tensor, original_size: tuple[int, int]) -> None:
        x = self.transforms.transforms(image.float() / 255)[None]  # what ToTensor then the transforms compute
        _, features, _, _ = self.model._prepare_backbone_features(self.model.forward_image(x))
        if self.model.directly_add_no_mem_embed:
            features[-1] = features[-1] + self.model.no_mem_embed
        # [HW, 1, C] per level, finest first (strides 4, 8, 16) -> [1, C, H, W]
        maps = [f.permute(1, 2, 0).reshape(1, -1, self.img_size // s, self.img_size // s) for f, s in zip(features, (4, 8, 16))]
        self._features = {"image": maps[-1], "high_res": maps[:-1]}
        self._original_size = original_size

    def predict(self, boxes: torch.Tensor | None, points: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = self._original_size
        # pixels -> the model's input frame; scalars and fills only, so that nothing waits on the device
        if boxes is not None:  # a box is two points labelled 2 and 3 (its corners)
            corners = boxes.reshape(-1, 2, 2)
            labels = torch.full(corners.shape[:2], 2, dtype=torch.int, device=corners.device)
            labels[:, 1] = 3
        elif points is not None:
            corners = points[:, None, :]
            labels = torch.ones(corners.shape[:2], dtype=torch.int, device=corners.device)
        else:
            raise ValueError("predict needs boxes or points")
        coords = torch.stack((corners[..., 0] * (self.img_size / w), corners[..., 1] * (self.img_size / h)), dim=-1)
        sparse, dense = self.model.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        low_res, scores, _, _ = self.model.sam_mask_decoder(
            image_embeddings=self._features["image"], image_pe=self.model.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=True,
            repeat_image=len(coords) > 1, high_res_features=self._features["high_res"],
        )
        return self.transforms.postprocess_masks(low_res, (h, w)) > self.transforms.mask_threshold, scores
