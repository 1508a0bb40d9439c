"""Sharded checkpoints, as transformers writes large models: ``model-0000k-of-0000n.safetensors`` (or
``pytorch_model-0000k-of-0000n.bin``) beside an index, ``model.safetensors.index.json``, whose ``weight_map``
names the shard of every tensor. Read as one checkpoint (safetensors lazily, header by header), and written back
as shards with the same boundaries and an index.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import AbswinError
from .jsonfile import read_json_object, write_json

INDEX_SUFFIX = ".index.json"
SAFETENSORS_INDEX = "model.safetensors.index.json"


def index_name(names: Iterable[str]) -> str | None:
    """The shard index among a folder's (or a repo's top-level) file names, the safetensors one first; else None."""
    indexes = sorted((n for n in names if n.endswith(INDEX_SUFFIX) and "/" not in n), key=lambda n: (n != SAFETENSORS_INDEX, n))
    return indexes[0] if indexes else None


def index_in(folder: Path) -> Path | None:
    """The shard index of a folder, or None when the folder is not sharded."""
    name = index_name(p.name for p in folder.glob(f"*{INDEX_SUFFIX}"))
    return folder / name if name else None


def weight_map_of(index: Path) -> dict[str, str]:
    """The index's ``weight_map`` (tensor name -> shard file), checked: every shard a file name beside the index."""
    weight_map = read_json_object(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise AbswinError(f"{index}: a shard index needs a non-empty weight_map of tensor name -> shard file")
    for key, shard in weight_map.items():
        if not isinstance(shard, str) or Path(shard).name != shard or shard.startswith("."):
            raise AbswinError(f"{index}: the shard of {key!r} must be a file name beside the index, found {shard!r}")
    return weight_map


@dataclass(frozen=True)
class ShardIndex:
    """Where each tensor of a sharded checkpoint lives: its index's ``weight_map`` (tensor name -> shard file
    beside the index)."""

    weight_map: Mapping[str, str]

    @property
    def files(self) -> list[str]:
        """The shard files in the order the index first names them."""
        return shard_files(self.weight_map)

    def shard_of(self, key: str) -> str:
        return self.weight_map[key]

    def renamed(self, names: Mapping[str, str]) -> ShardIndex:
        """The same index with each tensor under its new name (``names``: old -> new)."""
        return ShardIndex({names[k]: v for k, v in self.weight_map.items()})


def read_weight_map(index: Path) -> dict[str, str]:
    """``weight_map_of`` an index whose shards must all be there."""
    weight_map = weight_map_of(index)
    for shard in shard_files(weight_map):
        if not (index.parent / shard).is_file():
            raise AbswinError(f"{index}: shard {shard} is missing; download every file the index names")
    return weight_map


def shard_files(weight_map: Mapping[str, str]) -> list[str]:
    """The shard files in the order the index first names them."""
    return list(dict.fromkeys(weight_map.values()))


def output_shard_name(shard: str) -> str:
    """A safetensors output's name for an input shard: ``pytorch_model-00001-of-00002.bin`` ->
    ``model-00001-of-00002.safetensors``."""
    stem = shard.rsplit(".", 1)[0]
    return stem.replace("pytorch_model", "model", 1) + ".safetensors"


def write_index(path: Path, weight_map: dict[str, str], total_size: int) -> None:
    """``model.safetensors.index.json`` (at ``path``) for the shards of ``weight_map``."""
    write_json(path, {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))})
