"""Random weights of a trained model's scale for upstream models built in tests.

Upstream inits zero the position embeddings and relative-position tables (SAM, ViTDet) or start near zero
(transformers' Sam), and then a wrong table or embedding changes the output too little to see. Here every tensor
gets values that visibly shape the output."""

from __future__ import annotations

import torch


def randomize(model: torch.nn.Module, seed: int = 0, pos_embed_scale: float | None = None) -> torch.nn.Module:
    """Fill every parameter in place (norm scales near 1, biases near 0, matrices ~ 1/sqrt(fan-in); with
    ``pos_embed_scale`` a ``pos_embed`` of that scale, as trained embeddings are small); eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith(("rel_pos_h", "rel_pos_w")):
                p.copy_(noise * 0.5)
            elif name == "pos_embed" and pos_embed_scale is not None:
                p.copy_(noise * pos_embed_scale)
            elif p.ndim == 1:
                p.copy_(noise * 0.1 + (1.0 if name.endswith("weight") and "norm" in name else 0.0))
            else:
                p.copy_(noise / p[0].numel() ** 0.5)
    return model.eval()
