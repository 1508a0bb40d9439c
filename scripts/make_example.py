"""Build the example checkpoint shipped in ``abswin_convert/examples/hiera_tiny``.

A tiny timm Hiera with random weights and a planted window-periodic position embedding (until a trained one
replaces it), saved as timm's ``save_for_hf`` does: ``model.safetensors`` + ``config.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file

from abswin_convert.synthetic import structured_grid

MODEL_ARGS = {"embed_dim": 16, "num_heads": 1, "stages": [1, 1, 2, 1], "num_classes": 10}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("abswin_convert/examples/hiera_tiny"))
    args = parser.parse_args()
    torch.manual_seed(0)
    model = timm.create_model("hiera_tiny_224", pretrained=False, **MODEL_ARGS)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state["pos_embed"] = structured_grid((56, 56), MODEL_ARGS["embed_dim"], (8, 8)).reshape(1, 56 * 56, -1)
    args.out.mkdir(parents=True, exist_ok=True)
    save_file(state, args.out / "model.safetensors", metadata={"format": "pt"})
    config = {
        "architecture": "hiera_tiny_224",
        "num_classes": MODEL_ARGS["num_classes"],
        "model_args": {k: v for k, v in MODEL_ARGS.items() if k != "num_classes"},
        "pretrained_cfg": {"input_size": [3, 224, 224], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                           "interpolation": "bicubic", "crop_pct": 1.0, "num_classes": MODEL_ARGS["num_classes"]},
    }
    (args.out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
