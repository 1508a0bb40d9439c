"""The pure-Python unpickler both of our restricted unpicklers (``safe_pickle``, ``torch_zip``) start from.

The pure-Python unpickler keeps its memo in a dict (the C one grows an array to the largest index a PUT names: a
200 kB pickle saying ``LONG_BINPUT 1482859195`` made it allocate 23 GB), and here ``BYTEARRAY8`` reads its bytes
before making the bytearray (the stock one zero-fills the announced size first, so 16 bytes could claim gigabytes).
Subclasses add their own ``find_class`` and ``load_build`` and extend ``dispatch``.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any, ClassVar

# typeshed does not describe the pure-Python unpickler's internals (stack, read, append, dispatch)
_PurePythonUnpickler: Any = pickle._Unpickler


class BoundedUnpickler(_PurePythonUnpickler):
    """An unpickler whose allocations follow the bytes actually read."""

    def load_bytearray8(self) -> None:
        (size,) = struct.unpack("<Q", self.read(8))
        data = self.read(size)  # read before allocating: the announced size may be a lie
        if len(data) != size:
            raise pickle.UnpicklingError("pickle data was truncated")
        self.append(bytearray(data))

    dispatch: ClassVar[dict] = {**_PurePythonUnpickler.dispatch, pickle.BYTEARRAY8[0]: load_bytearray8}
