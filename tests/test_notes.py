"""Notes ready to paste: the calls they print build the model that loads the output, with real names and sizes."""

from __future__ import annotations

import re

import timm
from safetensors.torch import load_file, save_file

from abswin_convert import convert
from abswin_convert.demo import example_path
from tests import hiera_models as hm
from tests import test_sam2


def _call(notes: list[str], prefix: str) -> str:
    note = next(n for n in notes if n.startswith(prefix))
    return note[: note.rindex(")") + 1]


def test_the_timm_abswin_note_builds_the_model_that_loads_the_output(tmp_path):
    result = convert(example_path(), tmp_path / "out", 128, target="timm-abswin")
    call = _call(result.notes, "timm.create_model('hiera_tiny_224', num_classes=10, embed_dim=16")
    model = eval(call, {"timm": timm})  # the note, pasted
    model.load_state_dict(load_file(result.output), strict=True)


def test_without_a_config_the_timm_name_comes_from_width_and_depth(tmp_path):
    model = timm.create_model("hiera_small_224", pretrained=False)
    path = tmp_path / "hiera_small.safetensors"
    save_file(model.state_dict(), str(path))
    notes = convert(path, tmp_path / "o.safetensors", 448, target="timm-abswin").notes
    assert any(n.startswith("timm.create_model('hiera_small_224', abs_win_pos_embed=True") for n in notes), notes


def test_the_folder_line_names_timm_local_dir(cli, tmp_path):
    out = tmp_path / "h"
    text = cli("convert", example_path(), "-o", out, "--img-size", 128).output
    line = next(line for line in text.splitlines() if line.startswith("  load: "))
    assert line == f'  load: import timm; model = timm.create_model("local-dir:{out}", pretrained=True)  # built for 128x128'
    model = timm.create_model(f"local-dir:{out}", pretrained=True)
    assert tuple(model.pos_embed.shape) == (1, 32 * 32, 16)


def test_sam2_at_another_size_names_the_predictor_change(tmp_path):
    _, path = test_sam2.save_native("sam2", tmp_path)
    notes = convert(path, tmp_path / "o.pt", 512, fmt="pt").notes
    sizes = re.search(r"_bb_feat_sizes = (\[.*?\])", " ".join(notes)).group(1)
    assert eval(sizes) == [(128, 128), (64, 64), (32, 32)]  # strides 4, 8, 16 of the 512 input
    assert "image_size=512" in " ".join(notes)
    assert "_bb_feat_sizes" not in " ".join(convert(path, tmp_path / "n.pt", 1024, fmt="pt").notes)


def test_hiera_to_sam2_note_has_no_placeholder(tmp_path):
    _, path = hm.save_timm(tmp_path)
    notes = convert(path, tmp_path / "t.pt", 224, target="sam2", fmt="pt").notes
    assert not any("<" in n for n in notes) and any("num_heads=1" in n for n in notes)
