"""What every runtime builds for ``verify``: an upstream model at an input size, ready to take a checkpoint's
weights strictly and encode an image batch. Importable without torch (the families read the runtimes' config
conventions while converting); torch is imported when a model is loaded or run."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import AbswinError

if TYPE_CHECKING:
    import torch


@dataclass
class Encoder:
    """An upstream model (random weights, eval mode) and how a checkpoint's tensors reach it.

    ``rename`` maps a checkpoint name to the module's name, or to None for a tensor the module does not hold
    (``outside`` says which part of the checkpoint that is, e.g. "the detection heads"): those are left out of the
    strict load, and the report says so."""

    module: torch.nn.Module
    runtime: str  # what built it, in words a user can check: "segment-anything 1.0 ImageEncoderViT(img_size=1536, ...)"
    encode: Callable[[torch.Tensor], torch.Tensor]  # image batch [N, C, H, W] -> the encoder's output
    channels: int = 3
    rename: Callable[[str], str | None] = field(default=lambda key: key)
    outside: str = ""
    left_out: list[str] = field(default_factory=list)  # checkpoint tensors the module does not hold
    tied: Mapping[str, str] = field(default_factory=dict)  # module name -> the name it is a copy of (not saved)

    def load(self, state: Mapping[str, torch.Tensor]) -> Encoder:
        """Load ``state`` (checkpoint names) with ``strict=True``, leaving out what ``rename`` says is not the
        module's."""
        own, self.left_out = {}, []
        for key, value in state.items():
            name = self.rename(key)
            if name is None:
                self.left_out.append(key)
            else:
                own[name] = value
        for name, source in self.tied.items():  # as from_pretrained ties them: the copy is not in the file
            if name not in own and source in own:
                own[name] = own[source]
        from .strict import load_strict  # imports torch

        load_strict(self.module, own, self.runtime)
        return self

    def run(self, size: tuple[int, int], seed: int = 0) -> torch.Tensor:
        """The encoder's output on a fixed random batch of one image at ``size``, in float32."""
        import torch

        x = torch.randn(1, self.channels, *size, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            return self.encode(x).float()


class LoadError(AbswinError):
    """The weights do not fit the model the runtime built (a failed check, not a user error)."""


class NotBuildable(AbswinError):
    """No runtime here can build this checkpoint's model (nothing was checked: "not verified")."""


def package_version(distribution: str) -> str:
    """``NAME VERSION`` of an installed distribution, as the report names the runtime."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{distribution} {version(distribution)}"
    except PackageNotFoundError:
        return distribution


def prefixed(prefix: str) -> Callable[[str], str | None]:
    """A ``rename`` that keeps the tensors under ``prefix`` (without it) and leaves the rest out."""
    return lambda key: key[len(prefix):] if key.startswith(prefix) else None


def count_blocks(shapes: Mapping[str, tuple[int, ...]], prefix: str) -> int:
    """How many numbered blocks ``PREFIX.N.`` the names hold."""
    found = {key[len(prefix):].split(".", 1)[0] for key in shapes if key.startswith(prefix)}
    return len({int(n) for n in found if n.isdigit()})


def require(shapes: Mapping[str, tuple[int, ...]], *keys: str) -> None:
    """Refuse to infer a model from weights that lack what the inference reads (a checkpoint already damaged)."""
    missing = [key for key in keys if key not in shapes]
    if missing:
        raise LoadError(f"cannot build the model from the weights: {', '.join(missing)} missing")
