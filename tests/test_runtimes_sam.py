"""segment-anything and sam2 models built from nothing but a checkpoint's weights (runtimes/), against the models
the upstream packages build themselves: same architecture, strict load, same forward."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from segment_anything import sam_model_registry

from abswin_convert import convert_state_dict
from abswin_convert.errors import AbswinError
from abswin_convert.runtimes import sam2 as sam2_runtime
from abswin_convert.runtimes import segment_anything as sa_runtime
from tests.random_weights import randomize
from tests.test_sam import sa_model
from tests.test_sam2 import sam2_model

REGISTRY = {  # what segment-anything's own builders pass: (width, depth, heads, global blocks)
    "vit_b": (768, 12, 12, (2, 5, 8, 11)),
    "vit_l": (1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": (1280, 32, 16, (7, 15, 23, 31)),
}


def sam2_config_model(name: str, img_size: int = 256, seed: int = 0) -> torch.nn.Module:
    """The model sam2's own config builds (as build_sam2 does, here for ``img_size``), random weights."""
    cfg = OmegaConf.load(next(p for p in sam2_runtime._config_files() if p.stem == name))
    cfg.model.image_size = img_size
    torch.manual_seed(seed)
    return randomize(instantiate(cfg.model, _recursive_=True), seed)


@pytest.mark.parametrize("name", REGISTRY)
def test_released_sam_sizes_are_read_off_their_shapes(name):
    with torch.device("meta"):  # shapes only: no memory, no time
        state = sam_model_registry[name]().state_dict()
    shape = sa_runtime.encoder_shape({k[len("image_encoder."):]: v for k, v in state.items() if k.startswith("image_encoder.")})
    assert (shape.embed_dim, shape.depth, shape.num_heads, shape.global_attn_indexes) == REGISTRY[name]
    assert (shape.img_size, shape.window_size, shape.patch_size, shape.mlp_ratio, shape.out_chans) == (1024, 14, 16, 4.0, 256)


@pytest.mark.parametrize("img_size", [256, 448])  # 16 tokens a side: windows padded; 28: two whole windows
def test_a_tiny_sam_is_rebuilt_from_its_weights_and_computes_the_same(img_size):
    original = randomize(sa_model(img_size))
    built = sa_runtime.build_sam(original.state_dict(), decoder_heads=2)  # test_sam's decoder: 2 heads, not SAM's 8
    assert built.image_encoder.img_size == img_size and built.prompt_encoder.input_image_size == (img_size, img_size)
    x = torch.randn(1, 3, img_size, img_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = original.image_encoder(x)
        assert torch.equal(built.image_encoder(x), features)
        boxes = torch.tensor([[10.0, 20.0, 120.0, 90.0]])
        prompts = [m.prompt_encoder(points=None, boxes=boxes, masks=None) for m in (original, built)]
        masks = [m.mask_decoder(features, m.prompt_encoder.get_dense_pe(), *p, multimask_output=True)[0]
                 for m, p in zip((original, built), prompts)]
    assert torch.equal(masks[0], masks[1])


def test_sam_weights_for_another_size_are_refused_in_one_line():
    state = sa_model(256).state_dict()
    with pytest.raises(AbswinError, match=r"for 256 px \(16x16 tokens\), not 512; run abswin-convert convert --img-size 512"):
        sa_runtime.build_sam(state, 512)
    with pytest.raises(AbswinError, match="no mask_decoder weights"):
        sa_runtime.build_sam({k: v for k, v in state.items() if not k.startswith("mask_decoder.")})


def test_the_image_encoder_alone_builds_too():
    encoder = randomize(sa_model(256)).image_encoder
    built = sa_runtime.build_image_encoder(encoder.state_dict())
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        assert torch.equal(built(x), encoder(x))


def test_a_sam2_model_is_matched_to_its_config_and_computes_the_same():
    original = sam2_config_model("sam2.1_hiera_t")
    state = original.state_dict()
    assert sam2_runtime.config_for(sam2_runtime.trunk_shape(state))[0] == "sam2.1_hiera_t"
    without_2_1 = {k: v for k, v in state.items() if k != sam2_runtime.SAM2_1_MARKER}
    assert sam2_runtime.config_for(sam2_runtime.trunk_shape(without_2_1))[0] == "sam2_hiera_t"  # 2.0 told apart
    built = sam2_runtime.build_sam2(state, 256)
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(built.forward_image(x)["vision_features"], original.forward_image(x)["vision_features"])
    refit = convert_state_dict(state, 256, global_size=14)  # a 14x14 background, read off the weights
    assert sam2_runtime.build_sam2(refit, 256).image_encoder.trunk.pos_embed.shape[-2:] == (14, 14)


def test_a_sam2_trunk_of_no_released_shape_is_refused_naming_the_configs():
    state = sam2_model().state_dict()  # embed_dim 16, stages 1-1-2-1
    expected = r"embed_dim 16, stages 1-1-2-1\) matches none of .*sam2.1_hiera_t \(SAM 2.1, embed_dim 96"
    with pytest.raises(AbswinError, match=expected):
        sam2_runtime.build_sam2(state, 256)
