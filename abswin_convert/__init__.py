"""abswin-convert: take window-attention ViT checkpoints to a new resolution without breaking them."""

__version__ = "0.1.0"

from .convert import ConversionResult, convert, inspect  # noqa: E402

__all__ = ["ConversionResult", "convert", "inspect", "__version__"]
