"""The pure-Python unpickler both of our restricted unpicklers (``safe_pickle``, ``torch_zip``) start from.

The pure-Python unpickler keeps its memo in a dict (the C one grows an array to the largest index a PUT names: a
200 kB pickle saying ``LONG_BINPUT 1482859195`` made it allocate 23 GB), and here ``BYTEARRAY8`` reads its bytes
before making the bytearray (the stock one zero-fills the announced size first, so 16 bytes could claim gigabytes).

Bytes bound what is built, not what it stands for: the memo lets a pickle name one object many times, so that 1 MB
saying ``x = [x, x]`` forty times is 2**40 references to one object for anything that walks it as a tree (listing
tensors, writing it out), and a list nested 200,000 deep makes every recursive reader fail. So a loaded object is
measured once, each distinct object once (linear in the pickle), and refused past ``MAX_EXPANDED`` objects as a tree
or ``MAX_DEPTH`` levels, or when a container holds itself.
Subclasses add their own ``find_class`` and ``load_build`` and extend ``dispatch``.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any, ClassVar

MAX_DEPTH = 100  # a training checkpoint nests a handful of levels (state dicts, optimizer state, args)
MAX_EXPANDED = 1_000_000  # containers and other objects counted as a tree: a million is many optimizer states
_SCALARS = (type(None), bool, int, float, complex, str, bytes, bytearray)  # leaves: they expand to nothing

# typeshed does not describe the pure-Python unpickler's internals (stack, read, append, dispatch)
_PurePythonUnpickler: Any = pickle._Unpickler


class UnboundedGraph(ValueError):
    """An object whose shared references expand past the bounds, nest too deep, or hold themselves."""


class BoundedUnpickler(_PurePythonUnpickler):
    """An unpickler whose allocations follow the bytes actually read, and whose objects stay small as trees."""

    def load(self) -> Any:
        obj = super().load()
        check_expansion(obj)
        return obj

    def load_bytearray8(self) -> None:
        (size,) = struct.unpack("<Q", self.read(8))
        data = self.read(size)  # read before allocating: the announced size may be a lie
        if len(data) != size:
            raise pickle.UnpicklingError("pickle data was truncated")
        self.append(bytearray(data))

    dispatch: ClassVar[dict] = {**_PurePythonUnpickler.dispatch, pickle.BYTEARRAY8[0]: load_bytearray8}


def _children(node: Any) -> list[Any]:
    """What a walk descends into: a container's items (dict keys too) and attributes BUILD set (``_metadata``)."""
    found: list[Any] = list(getattr(node, "__dict__", {}).values()) if isinstance(node, (dict, list)) else []
    if isinstance(node, dict):
        return [*node.keys(), *node.values(), *found]
    if isinstance(node, (list, tuple, set, frozenset)):
        return [*node, *found]
    return found


def check_expansion(obj: Any) -> None:
    """Refuse ``obj`` (``UnboundedGraph``) when, walked as a tree, it has more than ``MAX_EXPANDED`` objects or is
    nested more than ``MAX_DEPTH`` deep, or when a container holds itself. Each distinct object is looked at once."""
    sizes: dict[int, int] = {}  # id -> the objects it expands to, itself included
    on_path: set[int] = set()
    stack: list[tuple[Any, list[Any] | None]] = [(obj, None)]
    while stack:
        node, children = stack[-1]
        if children is None:  # first visit
            if isinstance(node, _SCALARS) or id(node) in sizes:
                stack.pop()
                continue
            if id(node) in on_path:
                raise UnboundedGraph("a container that holds itself")
            if len(on_path) >= MAX_DEPTH:
                raise UnboundedGraph(f"objects nested more than {MAX_DEPTH} levels deep")
            on_path.add(id(node))
            children = _children(node)
            stack[-1] = (node, children)
            stack.extend((child, None) for child in children)
            continue
        stack.pop()
        on_path.discard(id(node))
        total = 1 + sum(sizes.get(id(child), 0) for child in children)
        if total > MAX_EXPANDED:
            raise UnboundedGraph(f"shared references that expand to more than {MAX_EXPANDED:,} objects")
        sizes[id(node)] = total
