"""The typed provenance record reads what every version wrote and writes it back unchanged, text for text."""

from __future__ import annotations

import pytest

from abswin_convert.errors import AbswinError
from abswin_convert.io.provenance import PREFIX, Provenance

# As an output of a ViTDet tiling records it (no global part, one window), from the Hub, with a finetune's entry.
WRITTEN = {
    "version": "0.1.0", "source": "org/vit", "source_file": "model.safetensors", "source_sha256": "ab" * 32,
    "source_revision": "main", "source_commit": "c" * 40, "family": "vitdet", "format": "timm", "target": "baked",
    "position_key": "pos_embed", "native_input": "224x224", "img_size": "448x640", "window": "14x14",
    "global_size": "none", "resize": "bicubic", "residual": "1.23457e-05", "window_energy": "undefined (one window)",
    "recipe": "vitdet: pretrained grid tiled per window", "finetune.steps": "10",
}


def test_a_record_reads_typed_and_writes_back_the_same_text():
    record = Provenance.from_metadata({"format": "pt", **{PREFIX + k: v for k, v in WRITTEN.items()}})
    assert record is not None and record.from_hub
    assert record.img_size == (448, 640) and record.conversion is not None
    done = record.conversion
    assert (done.spelling, done.native_input, done.window) == ("timm", (224, 224), (14, 14))
    assert done.global_size is None and done.window_energy is None and done.residual == pytest.approx(1.23457e-05)
    assert record.others == {"finetune.steps": "10"}
    assert record.entries() == WRITTEN
    assert record.metadata() == {"format": "pt", **{PREFIX + k: v for k, v in WRITTEN.items()}}


def test_a_file_without_abswin_entries_has_no_record_and_a_damaged_one_is_refused_in_one_line():
    assert Provenance.from_metadata({"format": "pt"}) is None
    damaged = {PREFIX + k: v for k, v in WRITTEN.items() if k != "window"}
    with pytest.raises(AbswinError, match=r"incomplete or damaged .*convert it again") as error:
        Provenance.from_metadata(damaged, "out.safetensors")
    assert "\n" not in str(error.value)
    with pytest.raises(AbswinError, match="not a size"):
        Provenance.from_entries({**WRITTEN, "img_size": "big"})


def test_a_window_change_and_the_tensors_rewritten_beside_the_embedding_read_typed():
    written = {**WRITTEN, "window_size": "16x16", "relpos_resize": "align-corners",
               "window_part": "none (pos_embed_window belongs to stage 1)", "changes_output": "yes: the attention window changed",
               "window_change_effect": "0.34", "also_rewritten": "blocks.1.attn.rel_pos_h, blocks.1.attn.rel_pos_w"}
    record = Provenance.from_entries(written)
    changed = record.window_change
    assert changed is not None and (changed.window_size, changed.effect) == ("16x16", "0.34")
    assert (changed.option("relpos_resize"), changed.option("window_part")) == ("align-corners", None)
    assert record.also_rewritten == ("blocks.1.attn.rel_pos_h", "blocks.1.attn.rel_pos_w")
    assert record.others == {"finetune.steps": "10"} and record.entries() == written
    with pytest.raises(AbswinError, match="incomplete or damaged"):
        Provenance.from_entries({k: v for k, v in written.items() if k != "window_part"})
