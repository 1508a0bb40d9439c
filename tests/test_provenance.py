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
