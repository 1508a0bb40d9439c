"""abswin-convert: take window-attention ViT checkpoints to a new resolution without breaking them."""

__version__ = "0.1.0"

from .api import ConversionResult, InspectReport, convert, inspect

__all__ = ["ConversionResult", "InspectReport", "__version__", "convert", "inspect"]
