"""What a new user hits (issue 25): plain ViTs under the names people give them, load lines and model cards that
are true, residuals in words, help and errors that say what to do."""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torchvision.models.vision_transformer import VisionTransformer
from transformers import ViTConfig, ViTModel

from abswin_convert import convert, inspect
from abswin_convert.errors import AbswinError
from abswin_convert.families.overrides import Overrides

DIM = 16


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# --- 1. plain ViTs under the usual names ----------------------------------------------------------------------


def torchvision_vit(image_size: int) -> VisionTransformer:
    """torchvision's ViT (``encoder.pos_embedding`` beside ``conv_proj``), tiny."""
    torch.manual_seed(0)
    model = VisionTransformer(image_size=image_size, patch_size=8, num_layers=1, num_heads=2, hidden_dim=DIM, mlp_dim=32)
    with torch.no_grad():
        model.encoder.pos_embedding.normal_(0, 0.5)
    return model.eval()


def transformers_vit(image_size: int) -> ViTModel:
    torch.manual_seed(0)
    config = ViTConfig(hidden_size=DIM, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                       image_size=image_size, patch_size=8)
    model = ViTModel(config).eval()
    with torch.no_grad():
        model.embeddings.position_embeddings.normal_(0, 0.5)
    return model


@pytest.fixture
def shared_vits(tmp_path):
    """A plain ViT as people share it: ``pos_embed [1, 65, 64]`` beside ``patch_embedding.embed.weight``, and
    vit-pytorch's ``pos_embedding [1, 17, 64]`` beside a Linear ``to_patch_embedding`` (its patch size unreadable)."""
    gen = torch.Generator().manual_seed(0)
    save_file({"cls_token": torch.randn(1, 1, 64, generator=gen), "pos_embed": torch.randn(1, 65, 64, generator=gen),
               "patch_embedding.embed.weight": torch.randn(64, 3, 4, 4, generator=gen)}, str(tmp_path / "conv.safetensors"))
    save_file({"pos_embedding": torch.randn(1, 17, 64, generator=gen), "cls_token": torch.randn(1, 1, 64, generator=gen),
               "to_patch_embedding.1.weight": torch.randn(48, generator=gen),
               "to_patch_embedding.2.weight": torch.randn(64, 48, generator=gen)}, str(tmp_path / "linear.safetensors"))
    return tmp_path / "conv.safetensors", tmp_path / "linear.safetensors"


def test_a_torchvision_vit_is_recognised_refused_by_default_and_tiled_on_request(tmp_path, cli):
    source = tmp_path / "vit.pth"
    torch.save(torchvision_vit(32).state_dict(), source)
    report = inspect(source)
    assert (report.family, report.position_key, report.grid, report.window, report.patch_stride) == (
        "vitdet", "encoder.pos_embedding", "4x4", "4x4", 8)
    message = one_line_error(cli("convert", source, "-o", tmp_path / "out.pth", "--img-size", 64))
    assert "plain global-attention ViT" in message and "--recipe tile" in message
    assert not (tmp_path / "out.pth").exists()
    result = cli("convert", source, "-o", tmp_path / "out.pth", "--img-size", 64, "--recipe", "tile")
    assert result.exit_code == 0, result.output
    big = torchvision_vit(64)
    big.load_state_dict(torch.load(tmp_path / "out.pth"), strict=True)
    pos = torch.load(source)["encoder.pos_embedding"]
    tiled = big.encoder.pos_embedding.detach()[0, 1:].reshape(8, 8, DIM)
    assert torch.equal(tiled[4:, 4:], pos[0, 1:].reshape(4, 4, DIM))  # the pretrained grid in every window


def test_a_transformers_vit_is_recognised_and_its_config_follows(tmp_path, cli):
    transformers_vit(32).save_pretrained(tmp_path / "vit")
    assert inspect(tmp_path / "vit").family == "vitdet"
    result = cli("convert", tmp_path / "vit", "-o", tmp_path / "out", "--img-size", 64, "--recipe", "tile")
    assert result.exit_code == 0, result.output
    model, info = ViTModel.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert all(not v for v in info.values()), info
    assert model.config.image_size == 64


def test_usual_names_are_recognised_or_refused_naming_every_missing_flag(shared_vits, cli, tmp_path):
    conv, linear = shared_vits
    assert (inspect(conv).grid, inspect(conv).patch_stride) == ("8x8", 4)
    assert "--recipe tile" in one_line_error(cli("convert", conv, "-o", tmp_path / "a.safetensors", "--img-size", 64))
    message = one_line_error(cli("convert", linear, "-o", tmp_path / "b.safetensors", "--img-size", 64))
    assert "--patch-stride" in message and "--recipe tile" in message  # both at once, not one per attempt
    result = cli("convert", linear, "-o", tmp_path / "b.safetensors", "--img-size", 64, "--patch-stride", 8,
                 "--recipe", "tile")
    assert result.exit_code == 0, result.output
    assert load_file(tmp_path / "b.safetensors")["pos_embedding"].shape == (1, 65, 64)


def test_a_grid_that_is_one_window_is_a_plain_vit_whoever_named_it(shared_vits, cli, tmp_path):
    conv, _ = shared_vits
    described = ("--key", "pos_embed", "--layout", "flat_cls", "--window", "8x8")
    message = one_line_error(cli("convert", conv, "-o", tmp_path / "a.safetensors", "--img-size", 64, *described))
    assert "one window" in message and "--recipe tile" in message
    assert not (tmp_path / "a.safetensors").exists()
    result = cli("convert", conv, "-o", tmp_path / "a.safetensors", "--img-size", 64, *described, "--recipe", "tile")
    assert result.exit_code == 0, result.output
    assert cli("inspect", conv, *described).exit_code == 0  # looking at it needs no recipe


def test_a_named_family_is_not_told_to_pass_a_family(tmp_path, cli):
    save_file({"pos": torch.randn(1, 65, 8)}, str(tmp_path / "x.safetensors"))
    message = one_line_error(cli("inspect", tmp_path / "x.safetensors", "--family", "vitdet"))
    assert "pass --family" not in message and "--family generic --key" in message


def test_an_unknown_checkpoint_is_told_every_flag_it_needs_at_once(tmp_path):
    save_file({"pos": torch.randn(1, 65, 8)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(AbswinError) as error:
        inspect(tmp_path / "x.safetensors", overrides=Overrides.parse(key="pos"))
    assert "--layout" in str(error.value) and "--window" in str(error.value) and "--patch-stride" in str(error.value)


# --- 11. the old hooks import ---------------------------------------------------------------------------------


def test_the_documented_hooks_import_still_works_for_one_release():
    from abswin_convert.evaluation import hooks

    sys.modules.pop("abswin_convert.hooks", None)
    with pytest.warns(DeprecationWarning, match="abswin_convert.evaluation.hooks"):
        old = importlib.import_module("abswin_convert.hooks")
    assert old.run_hook is hooks.run_hook


# --- 10. no FutureWarning from the hiera runtime, no prints from interpolate_pos_embed -------------------------


def test_the_official_hiera_runtime_builds_without_timms_future_warning():
    """hiera-transformer imports ``timm.models.layers``, which timm deprecates with a FutureWarning; the product
    keeps it from users. Imported afresh here, with every warning recorded (pytest's own filter set aside); the
    modules this test imported afresh are put back as they were after."""
    from abswin_convert.runtimes.hiera import create

    fresh = [name for name in sys.modules if name.split(".")[0] == "hiera" or name.startswith("timm.models.layers")]
    saved = {name: sys.modules.pop(name) for name in fresh}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            create({"embed_dim": 16, "num_heads": 1, "stages": [1, 1, 1, 1], "num_classes": 10}, 224)
    finally:
        sys.modules.update(saved)
    assert [str(w.message) for w in caught if issubclass(w.category, FutureWarning)] == []


def test_interpolate_pos_embed_prints_nothing_and_logs_one_line_per_call(capsys, caplog):
    import timm

    from abswin_convert import interpolate_pos_embed

    caplog.set_level("INFO", logger="abswin_convert")
    small = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, embed_dim=DIM, depth=1, num_heads=2)
    big = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, embed_dim=DIM, depth=1, num_heads=2)
    for _ in range(2):
        state = small.state_dict()
        interpolate_pos_embed(big, state)
        big.load_state_dict(state, strict=True)
    assert capsys.readouterr().out == ""
    assert [r.getMessage() for r in caplog.records if r.name == "abswin_convert"] == [
        "abswin-convert: pos_embed 2x2 -> 4x4 tokens by plain bicubic resize (the model has no windows, so no "
        "window pattern to keep)"] * 2


# --- 2. every load line printed works -------------------------------------------------------------------------


def run_load_line(stdout: str, cwd: Path) -> object:
    """Execute the printed ``load:`` line as the user would paste it, in the folder they ran the command in."""
    lines = [line.split("load: ", 1)[1] for line in stdout.splitlines() if line.strip().startswith("load: ")]
    assert len(lines) == 1, stdout
    namespace: dict = {}
    cwd_before = os.getcwd()
    os.chdir(cwd)
    try:
        exec(lines[0], namespace)  # the line the user would paste
    finally:
        os.chdir(cwd_before)
    return namespace["model"]


@pytest.mark.parametrize("args", [
    ("-o", "out"), ("-o", "out", "--format", "pt"), ("-o", "out", "--target", "timm-abswin"),
    ("-o", "single.safetensors"), ("-o", "single.pth"),
])
def test_every_load_line_printed_for_the_example_loads_it(tmp_path, monkeypatch, cli, args):
    from abswin_convert.demo import example_path

    monkeypatch.chdir(tmp_path)
    result = cli("convert", example_path(), *args, "--img-size", "128")
    assert result.exit_code == 0, result.output
    model = run_load_line(result.stdout, tmp_path)
    assert model.pos_embed.shape[1] in (1024, 16)  # baked 32x32 tokens, or the split global part's 16 channels
    if "single" in args[1]:
        assert "config.json" in result.stdout  # what a single file leaves out is said


def test_the_load_line_of_a_transformers_folder_loads_it(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    transformers_vit(32).save_pretrained(tmp_path / "vit")
    for fmt in ("safetensors", "pt"):
        result = cli("convert", "vit", "-o", f"out-{fmt}", "--img-size", "64", "--recipe", "tile", "--format", fmt)
        assert result.exit_code == 0, result.output
        assert run_load_line(result.stdout, tmp_path).config.image_size == 64


# --- 3. model cards say what is true --------------------------------------------------------------------------


def test_a_sam_card_downloads_its_own_file_and_lists_the_resized_tables(tmp_path):
    from abswin_convert.hub.push import push
    from tests import test_sam

    torch.save(test_sam.sa_model(1024).state_dict(), tmp_path / "sam_vit_b.pth")
    convert(tmp_path / "sam_vit_b.pth", tmp_path / "sam_vit_b_1536.pth", 1536)
    card = push(tmp_path / "sam_vit_b_1536.pth", "me/sam-1536", dry_run=True).card
    assert 'hf_hub_download("me/sam-1536", "sam_vit_b_1536.pth")' in card and "model.safetensors" not in card
    assert "`image_encoder.blocks.1.attn.rel_pos_h`, `image_encoder.blocks.1.attn.rel_pos_w`" in card
    assert "Every other tensor is copied unchanged" not in card


def test_a_card_takes_the_license_of_the_sources_config_and_explains_the_window_energy(tmp_path):
    from abswin_convert.demo import example_path
    from abswin_convert.hub.push import push

    convert(example_path(), tmp_path / "out", 128)
    card = push(tmp_path / "out", "me/hiera-128", dry_run=True).card
    assert "license: apache-2.0" in card.split("---")[1]  # the example's config.json names it
    energy = next(line for line in card.splitlines() if line.startswith("| window energy"))
    assert "0 = no window pattern" in energy and "`0.020`" in energy  # a scale, and three decimals


# --- 5. a residual in words, and a warning past a stated threshold ---------------------------------------------


def test_a_lossy_global_size_is_said_in_words_and_warned_about(tmp_path, cli):
    from abswin_convert.demo import example_path
    from abswin_convert.residual import WARN_OVER

    result = cli("convert", example_path(), "-o", tmp_path / "small.safetensors", "--img-size", 128, "--global-size", "4x4")
    assert result.exit_code == 0, result.output
    assert "of the global part lost)" in result.stdout
    warning = result.stderr.strip().splitlines()[-1]
    assert warning.startswith("abswin-convert: warning: the 4x4 global grid loses") and f"{WARN_OVER:.0%}" in warning
    exact = cli("convert", example_path(), "-o", tmp_path / "full.safetensors", "--img-size", 128)
    assert "residual 0 (exact)" in exact.stdout and "warning" not in exact.stderr
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert f"more than {WARN_OVER:.0%} of the global part" in readme  # the threshold is stated where users read


# --- 7. the Python API speaks Python ------------------------------------------------------------------------


def test_api_errors_name_keyword_arguments_not_flags():
    from abswin_convert import convert_state_dict
    from abswin_convert.demo import example_path

    vit = torchvision_vit(32).state_dict()
    with pytest.raises(AbswinError, match='recipe="tile"') as plain:
        convert_state_dict(vit, 64)
    hiera = load_file(example_path() / "model.safetensors")
    with pytest.raises(AbswinError, match="img_size 72x72 is not a multiple") as size:
        convert_state_dict(hiera, 72)
    assert "--" not in str(plain.value) + str(size.value)


def test_convert_state_dict_returns_the_residual_and_its_warning_and_documents_recipe():
    from abswin_convert import convert_state_dict
    from abswin_convert.demo import example_path

    hiera = load_file(example_path() / "model.safetensors")
    refit = convert_state_dict(hiera, 128, global_size=4)
    assert refit.residual == pytest.approx(0.937, abs=1e-3) and "loses 88%" in refit.warnings[0]
    exact = convert_state_dict(hiera, 128)
    assert (exact.residual, exact.warnings) == (0.0, [])
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert "patch_stride=None, recipe=None, window_size=None" in readme


# --- 9. the zoo report's hook columns are read by people ------------------------------------------------------


def test_the_zoo_report_shows_verdict_native_error_top1_and_miou_in_columns(tmp_path):
    from abswin_convert.zoo.report import OutputRow, ZooReport

    hooks = {
        "verify": {"ok": True, "verified": True, "verdict": "verified", "problems": [], "native_max_abs_error": 7.5e-09,
                   "runtime": "timm 1.0", "runtime_ok": True},
        "eval": {"top1": 0.79, "loss": 0.61, "images": 500},
        "sam_eval": {"miou": 0.712, "ok": True},
        "mypkg.checks:shapes": {"ok": False, "tensors": 12},
    }
    row = OutputRow("out", "src", "128x128", "baked", "converted", 1.0, residual=0.937, window_energy=0.02, hooks=hooks)
    markdown = ZooReport(tmp_path / "zoo.toml", tmp_path, [row]).markdown()
    header, _, line = markdown.strip().splitlines()[-3:]
    cells = dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in line.split("|")], strict=True))
    assert (cells["verdict"], cells["native error"], cells["top-1"], cells["mIoU"]) == ("verified", "7.5e-09", "0.79", "0.712")
    assert cells["other hooks"] == "mypkg.checks:shapes failed, sam_eval ok"
    assert cells["residual"] == "9.37e-01 (88% of the global part lost)"
    assert "problems=" not in markdown and "=" not in line


# --- 4. --target sam2: the printed call is the source's Hiera, and what it cannot hold is said ----------------


def test_the_sam2_call_printed_for_the_example_keeps_its_q_pool_and_names_the_one_channel_stem(tmp_path, cli):
    import sam2.modeling.backbones.hieradet  # the printed call names it

    from abswin_convert.demo import example_path

    result = cli("convert", example_path(), "-o", tmp_path / "trunk.pt", "--img-size", 64, "--target", "sam2")
    assert result.exit_code == 0, result.output
    notes = [line.split("note: ", 1)[1] for line in result.stdout.splitlines() if "note: " in line]
    call = next(note for note in notes if note.startswith("sam2.")).split(" reproduces")[0]
    assert "q_pool=2," in call and "window_spec=(8, 4, 4, 4)" in call  # the example's config.json: q_pool 2
    trunk = eval(call, {"sam2": sam2})
    with torch.no_grad():
        features = trunk(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape[-2:]) for f in features] == [(16, 16), (8, 8), (4, 4), (4, 4)]  # as the source's stages
    stem = next(note for note in notes if "patch_embed.proj.weight" in note)
    assert "1 input channel" in stem and "3" in stem
    state = {k.removeprefix("image_encoder.trunk."): v for k, v in torch.load(tmp_path / "trunk.pt")["model"].items()}
    mismatched = {k for k, v in trunk.state_dict().items() if state[k].shape != v.shape}
    assert mismatched == {"patch_embed.proj.weight"}  # the one thing the note says


# --- 8. help that explains its words and keeps its promises ---------------------------------------------------


def test_zoo_help_shows_examples_and_the_manifest_schema(cli):
    text = cli("zoo", "--help").output
    examples = text.split("Examples:")[1].split("Options:")[0]
    assert examples.count("abswin-convert zoo") >= 2
    from abswin_convert.zoo.manifest import _MODEL_KEYS

    for field in ("[[model]]", "[defaults]", *(_MODEL_KEYS - {"to"})):  # every key an entry takes ("to": old spelling)
        assert field in text, field


def test_help_explains_its_words_where_they_first_appear(cli):
    top = " ".join(cli("--help").output.split())
    for word in ("baked:", "global part:", "window energy:"):
        assert word in top, word
    for name in ("convert", "inspect"):
        assert "not the identity" not in cli(name, "--help").output


@pytest.mark.parametrize("name", ["eval", "finetune"])
def test_eval_and_finetune_ask_for_one_square_size(cli, name):
    text = " ".join(cli(name, "--help").output.split())
    assert "--img-size N " in text and "N|HxW" not in text


def test_demo_help_says_what_it_needs(cli):
    text = " ".join(cli("demo", "--help").output.split())
    assert "torch" in text and "timm" in text


# --- 6. the plot of a plain ViT ------------------------------------------------------------------------------


def test_the_plot_of_a_plain_vit_draws_no_windows_and_says_what_to_do(tmp_path, monkeypatch):
    from abswin_convert import plot

    torch.save(torchvision_vit(32).state_dict(), tmp_path / "vit.pth")
    seen = {}
    real = plot.save_figure
    monkeypatch.setattr(plot, "save_figure", lambda panels, captions, window, *rest: seen.update(
        panels=panels, captions=captions, window=window, rest=rest) or real(panels, captions, window, *rest))
    assert plot.plot_checkpoint(tmp_path / "vit.pth", tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    headline = seen["rest"][-1]
    assert seen["window"] is None  # no window lines on a model that has none
    assert all("undefined" in caption for caption in seen["captions"])  # as the CLI says, never "0.00"
    assert "keep the runtime's interpolation" in headline and "--recipe tile" in headline and "chance" not in headline
    text = " ".join([headline, *seen["captions"], *(title for title, _ in seen["panels"]), plot.COLOUR_KEY])
    assert "strength" not in text  # one name for one quantity: window energy, as the CLI says
