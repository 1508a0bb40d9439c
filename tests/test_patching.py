"""Absolute win at run time (``abswin_convert.patch``) on the real upstream runtimes, tiny and with random weights:
the native size unchanged, another size equal to the model built there and loaded with what ``convert`` writes,
the split into two trainable parts, ``bake``, the cache, ``torch.compile`` and the refusals."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import pytest
import timm
import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from timm.models.vision_transformer import VisionTransformer
from transformers import (
    HieraConfig,
    HieraForImageClassification,
    HieraModel,
    SamConfig,
    SamModel,
    SamVisionConfig,
    SamVisionModel,
    VitDetBackbone,
    VitDetConfig,
    VitDetModel,
)

import abswin_convert
from abswin_convert.errors import AbswinError
from abswin_convert.maths import absolute_win as aw
from abswin_convert.maths.resize import BICUBIC, BICUBIC_ANTIALIAS
from abswin_convert.patching import compose
from tests.random_weights import randomize

DIM, HEADS = 32, 2


def _image(size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


# --- the runtimes, each built at an input size ------------------------------------------------------------------


def timm_vit(size: int) -> torch.nn.Module:
    return VisionTransformer(img_size=size, patch_size=8, embed_dim=DIM, depth=2, num_heads=HEADS, num_classes=0)


def timm_vit_registers(size: int) -> torch.nn.Module:
    """deit-3 style: a register token, and prefix tokens that get no position (``no_embed_class``)."""
    return VisionTransformer(img_size=size, patch_size=8, embed_dim=DIM, depth=2, num_heads=HEADS, num_classes=0,
                             reg_tokens=1, no_embed_class=True)


def timm_samvit(size: int) -> torch.nn.Module:
    return timm.create_model("samvit_base_patch16", pretrained=False, img_size=size, embed_dim=DIM, depth=2,
                             num_heads=HEADS, window_size=4, global_attn_indexes=(1,), neck_chans=16, num_classes=0)


def timm_hiera(size: int) -> torch.nn.Module:
    return timm.create_model("hiera_tiny_224", pretrained=False, img_size=size, embed_dim=16, num_heads=1,
                             stages=(1, 1, 2, 1), num_classes=5)


def sa_encoder(size: int) -> ImageEncoderViT:
    return ImageEncoderViT(img_size=size, patch_size=16, embed_dim=DIM, depth=2, num_heads=HEADS, mlp_ratio=2,
                           out_chans=16, qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                           use_rel_pos=True, global_attn_indexes=(1,), window_size=4)


def sa_sam(size: int) -> Sam:
    g = size // 16
    prompt = PromptEncoder(embed_dim=16, image_embedding_size=(g, g), input_image_size=(size, size), mask_in_chans=4)
    decoder = MaskDecoder(transformer_dim=16, transformer=TwoWayTransformer(depth=1, embedding_dim=16, mlp_dim=32,
                          num_heads=2), num_multimask_outputs=3, iou_head_depth=2, iou_head_hidden_dim=16)
    return Sam(sa_encoder(size), prompt, decoder)


def _sam_vision(size: int) -> dict:
    return dict(hidden_size=DIM, num_hidden_layers=2, num_attention_heads=HEADS, global_attn_indexes=[1],
                window_size=4, output_channels=16, mlp_dim=64, image_size=size)


def hf_sam(size: int) -> SamModel:
    return SamModel(SamConfig(
        vision_config=_sam_vision(size), prompt_encoder_config=dict(hidden_size=16, mask_input_channels=4, image_size=size),
        mask_decoder_config=dict(hidden_size=16, mlp_dim=32, num_hidden_layers=1, num_attention_heads=2,
                                 iou_head_hidden_dim=16)))


def hf_sam_vision(size: int) -> SamVisionModel:
    return SamVisionModel(SamVisionConfig(**_sam_vision(size)))


def _vitdet_config(size: int) -> VitDetConfig:
    return VitDetConfig(hidden_size=DIM, num_hidden_layers=2, num_attention_heads=HEADS, patch_size=8,
                        window_block_indices=[0], window_size=4, use_relative_position_embeddings=True,
                        image_size=size, pretrain_image_size=size, out_features=["stage2"])


def _hiera_config(size: int) -> HieraConfig:
    return HieraConfig(embed_dim=16, num_heads=[1, 2, 4, 8], depths=[1, 1, 2, 1], image_size=[size, size], num_labels=5)


def hf_hiera(size: int) -> HieraModel:
    return HieraModel(_hiera_config(size))


def hf_hiera_classifier(size: int) -> HieraForImageClassification:
    return HieraForImageClassification(_hiera_config(size))


@dataclass(frozen=True)
class Case:
    build: Callable[[int], torch.nn.Module]
    run: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]
    native: int
    other: int  # another size the runtime's windows allow (a part-window grid where they are padded)
    window: int | None = None


CASES = {
    "timm-vit": Case(timm_vit, lambda m, x: m(x), 32, 48, window=4),
    "timm-vit-registers": Case(timm_vit_registers, lambda m, x: m(x), 32, 48, window=2),
    "timm-samvit": Case(timm_samvit, lambda m, x: m(x), 128, 176),
    "timm-hiera": Case(timm_hiera, lambda m, x: m(x), 64, 96),
    "sa-encoder": Case(sa_encoder, lambda m, x: m(x), 128, 176),
    "sa-sam": Case(sa_sam, lambda m, x: m.image_encoder(x), 128, 176),
    "hf-sam": Case(hf_sam, lambda m, x: m.vision_encoder(x)[0], 128, 176),
    "hf-sam-vision": Case(hf_sam_vision, lambda m, x: m(x).last_hidden_state, 128, 176),
    "hf-vitdet": Case(lambda s: VitDetModel(_vitdet_config(s)), lambda m, x: m(x).last_hidden_state, 32, 48),
    "hf-vitdet-backbone": Case(lambda s: VitDetBackbone(_vitdet_config(s)), lambda m, x: m(x).feature_maps[0], 32, 48),
    "hf-hiera": Case(hf_hiera, lambda m, x: m(x).last_hidden_state, 64, 96),
    "hf-hiera-classifier": Case(hf_hiera_classifier, lambda m, x: m(x).logits, 64, 96),
}


def built(case: Case, size: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return randomize(case.build(size), seed=seed)


def patched(case: Case, split: bool = False) -> torch.nn.Module:
    return abswin_convert.patch(built(case, case.native), split=split, window=case.window)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@torch.no_grad()
def at_size(case: Case, model: torch.nn.Module, size: int, seed: int = 1) -> torch.Tensor:
    return case.run(model, _image(size, seed))


def position(model: torch.nn.Module):
    return model._abswin_patch.position


# --- exactness ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_native_size_output_is_unchanged_and_unpatch_restores_the_model(name):
    case = CASES[name]
    model = built(case, case.native)
    before, keys = at_size(case, model, case.native), list(model.state_dict())
    abswin_convert.patch(model, window=case.window)
    assert list(model.state_dict()) == keys  # unsplit, the runtime's parameter keeps its name
    assert relative(at_size(case, model, case.native), before) <= 1e-6
    abswin_convert.unpatch(model)
    assert type(model) is type(case.build(case.native)) and not hasattr(model, "_abswin_patch")
    assert torch.equal(at_size(case, model, case.native), before)


@pytest.mark.parametrize("name", CASES)
def test_another_size_equals_the_model_built_there_with_what_convert_writes(name):
    case = CASES[name]
    model = patched(case)
    out = at_size(case, model, case.other)
    baked = abswin_convert.bake(model, case.other)
    # bake is convert_state_dict (what `convert --img-size` writes); the run-time embedding is the same, bit for bit
    pos = position(model)
    key = model._abswin_patch.pos_key
    assert torch.equal(pos.runtime_value((case.other // pos.det.patch_stride,) * 2), baked[key])
    reference = built(case, case.other, seed=5)
    reference.load_state_dict(baked, strict=True)
    assert relative(out, at_size(case, reference, case.other)) <= 1e-5


@pytest.mark.parametrize("name", CASES)
def test_split_gives_two_trainable_parts_that_train_save_reload_and_bake(name, tmp_path):
    case = CASES[name]
    unsplit_out = at_size(case, patched(case), case.other)
    model = patched(case, split=True)
    pos = position(model)
    named = dict(model.named_parameters())
    prefix = model._abswin_patch.pos_key[: -len(pos.name)]
    window, global_ = named[prefix + "pos_embed_win"], named[prefix + "pos_embed"]
    assert tuple(window.shape[-2:]) == tuple(pos.det.window) and window.shape[1] == global_.shape[1]
    assert tuple(global_.shape[-2:]) == tuple(pos.det.grid)
    assert relative(at_size(case, model, case.other), unsplit_out) <= 1e-5
    # gradients reach both parts
    model.train()
    case.run(model, _image(case.other)).square().mean().backward()
    assert window.grad is not None and window.grad.abs().sum() > 0
    assert global_.grad is not None and global_.grad.abs().sum() > 0
    model.eval()
    # the state dict saves and reloads into a patched model
    with torch.no_grad():
        global_.add_(torch.randn_like(global_) * 0.1)
    torch.save(model.state_dict(), tmp_path / "split.pt")
    other = patched(case, split=True)
    other.load_state_dict(torch.load(tmp_path / "split.pt"), strict=True)
    trained_out = at_size(case, model, case.other)
    assert torch.equal(at_size(case, other, case.other), trained_out)
    # bake writes the runtime's own layout for a size, loading strictly into the unpatched runtime built there
    reference = built(case, case.other, seed=5)
    reference.load_state_dict(abswin_convert.bake(model, case.other), strict=True)
    assert relative(at_size(case, reference, case.other), trained_out) <= 1e-5
    # unpatch keeps what was trained, composed at the native size
    native_out = at_size(case, model, case.native)
    abswin_convert.unpatch(model)
    assert relative(at_size(case, model, case.native), native_out) <= 1e-6


def test_the_torch_twin_computes_the_numpy_maths():
    gen = np.random.default_rng(0)
    grid = gen.standard_normal((10, 13, 5))
    for window in ((4, 4), (5, 3), (10, 13)):
        w_np, g_np = aw.split(grid, window)
        w_t, g_t = compose.split(torch.from_numpy(grid), window)
        assert np.abs(w_t.numpy() - w_np).max() < 1e-13 and np.abs(g_t.numpy() - g_np).max() < 1e-13
        for resize in (BICUBIC, BICUBIC_ANTIALIAS):
            for size in ((17, 9), (7, 20), (10, 13)):
                expected = aw.compose(w_np, g_np, size, resize)
                got = compose.compose(w_t, g_t, size, resize).numpy()
                assert np.abs(got - expected).max() < 1e-12, (window, resize, size)


# --- cost: the cache, torch.compile ------------------------------------------------------------------------------


def test_the_embedding_is_cached_per_size_until_a_parameter_changes():
    model = patched(CASES["timm-samvit"])
    pos = position(model)
    with torch.no_grad():
        first = pos.at((11, 11))[0]
        assert pos.at((11, 11))[0] is first  # cached
        assert pos.at((12, 12))[0] is not first
        assert pos.at((11, 11))[0] is first  # one entry per size
    (param,) = pos.parameters()  # the runtime sees no pos_embed of its own: the patch adds it
    assert model.pos_embed is None and "pos_embed" in dict(model.named_parameters())
    param.grad = torch.ones_like(param)
    torch.optim.SGD([param], lr=0.1).step()  # writes the parameter in place
    with torch.no_grad():
        after = pos.at((11, 11))[0]
    assert after is not first and not torch.equal(after, first)
    # training: recomputed every time, with the graph to the parameter
    training = pos.at((11, 11))[0]
    assert training.grad_fn is not None and pos.at((11, 11))[0] is not training


@pytest.mark.parametrize("name", ["timm-vit", "timm-samvit"])
def test_torch_compile_traces_a_patched_model_in_one_graph(name):
    case = CASES[name]
    model = patched(case)
    compiled = torch.compile(model, fullgraph=True, backend="eager")  # dynamo traces; a graph break would raise
    for size in (case.native, case.other):
        x = _image(size)
        with torch.no_grad():
            assert relative(compiled(x), case.run(model, x)) <= 1e-6
    model.train()
    compiled(_image(case.other)).sum().backward()  # training through the compiled graph reaches the embedding
    (param,) = position(model).parameters()
    assert param.grad is not None and param.grad.abs().sum() > 0


# --- what patch does not do ---------------------------------------------------------------------------------------


def test_patching_twice_changes_nothing_and_other_options_repatch():
    case = CASES["timm-samvit"]
    model = patched(case)
    out = at_size(case, model, case.other)
    abswin_convert.patch(model)
    assert len(model.patch_embed._forward_hooks) == 1 and torch.equal(at_size(case, model, case.other), out)
    abswin_convert.patch(model, split=True)
    assert len(model.patch_embed._forward_hooks) == 1 and "pos_embed_win" in dict(model.named_parameters())
    assert relative(at_size(case, model, case.other), out) <= 1e-6


def test_a_plain_vit_needs_a_window():
    with pytest.raises(AbswinError, match=r"attends globally.*pass window="):
        abswin_convert.patch(built(CASES["timm-vit"], 32))


def test_a_window_other_than_the_models_own_is_refused():
    with pytest.raises(AbswinError, match=r"4x4 windows of its own; window= is for plain ViTs"):
        abswin_convert.patch(built(CASES["timm-samvit"], 128), window=7)


def test_an_unknown_model_is_refused_naming_the_runtimes():
    with pytest.raises(AbswinError, match=r"does not know Linear; it patches timm VisionTransformer .*HieraModel"):
        abswin_convert.patch(torch.nn.Linear(2, 2))


def test_bake_needs_a_patched_model():
    with pytest.raises(AbswinError, match=r"bake takes a model that abswin_convert\.patch has patched"):
        abswin_convert.bake(built(CASES["timm-samvit"], 128), 256)


def test_runtimes_that_already_compose_absolute_win_are_left_alone(capsys):
    from sam2.modeling.backbones.hieradet import Hiera as Sam2Hiera

    models = [
        timm.create_model("hiera_tiny_224", pretrained=False, img_size=64, embed_dim=16, num_heads=1,
                          stages=(1, 1, 2, 1), abs_win_pos_embed=True, global_pos_size=(4, 4)),
        Sam2Hiera(embed_dim=16, num_heads=1, stages=(1, 1, 1, 1), global_att_blocks=(2,),
                  window_pos_embed_bkg_spatial_size=(4, 4)),
    ]
    for model in models:
        cls, keys = type(model), list(model.state_dict())
        assert abswin_convert.patch(model) is model
        assert type(model) is cls and list(model.state_dict()) == keys and not hasattr(model, "_abswin_patch")
    said = capsys.readouterr().out.splitlines()
    suffix = " already composes absolute win at run time; nothing to patch"
    assert said == [f"abswin-convert: timm's absolute-win Hiera (abs_win_pos_embed=True){suffix}",
                    f"abswin-convert: SAM2{suffix}"]


def test_sam_prompt_encoder_follows_the_image_embedding():
    case = CASES["sa-sam"]
    model = patched(case)
    embedding = at_size(case, model, case.other)
    assert model.prompt_encoder.get_dense_pe().shape[-2:] == embedding.shape[-2:] == (11, 11)
    abswin_convert.unpatch(model)
    assert model.prompt_encoder.image_embedding_size == (8, 8)
