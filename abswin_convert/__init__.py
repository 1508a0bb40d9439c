"""abswin-convert: take window-attention ViT checkpoints to a new resolution without breaking them."""

__version__ = "0.1.0"

from .api import ConversionResult, InspectReport, convert, inspect
from .in_memory import ConvertedStateDict, convert_state_dict, interpolate_pos_embed, resample_abswin_pos_embed

__all__ = [
    "ConversionResult", "ConvertedStateDict", "InspectReport", "__version__", "convert", "convert_state_dict", "inspect",
    "interpolate_pos_embed", "resample_abswin_pos_embed",
]
