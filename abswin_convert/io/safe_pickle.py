"""Unpickle numpy weights (detectron2 ``.pkl``) from files nobody vouches for.

Only plain containers, numpy arrays of numbers and their dtypes come out; any other class or function is refused
before it is called. Fuzzing found that "only numpy" is not enough on its own, hence the extra rules:

- the pure-Python unpickler, whose memo is a dict: the C one grows an array to the largest index a PUT names, and a
  200 kB pickle saying ``LONG_BINPUT 1482859195`` made it allocate 23 GB;
- ``BYTEARRAY8`` reads its bytes before making the bytearray (the pure-Python unpickler zero-fills the announced
  size first, so 16 bytes could claim gigabytes);
- dtypes of numbers only: an object dtype lets ``ndarray.__setstate__`` crash the interpreter (a segfault with a
  short list for a long shape) or fill gigabytes with pointers;
- ``_reconstruct`` only as numpy itself writes it, an empty ``ndarray`` to be filled by its state; ``ndarray``
  itself comes out as a name for ``_reconstruct``, not as something to call (``ndarray((n,), 'O')`` is a bomb).
"""

from __future__ import annotations

import pickle
from typing import Any, BinaryIO, ClassVar

import numpy as np

from .unpickling import BoundedUnpickler

_RECONSTRUCT = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}
_FROMBUFFER = {("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}  # protocol 5
_ALLOWED = {
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("collections", "OrderedDict"),
}
_NDARRAY = object()  # what the pickle's ``numpy.ndarray`` stands for: an argument of _reconstruct, not callable
_NUMBER_KINDS = "biufc"  # bool, signed, unsigned, float, complex


def load_numpy_pickle(file: BinaryIO) -> Any:
    """The object pickled in ``file``; ``pickle.UnpicklingError`` names what was refused (``GLOBAL name``)."""
    return _NumpyOnlyUnpickler(file, encoding="latin1").load()


def _number_dtype(*args: Any) -> np.dtype:
    """``numpy.dtype`` for plain numbers; object, string, structured and sub-array dtypes are refused."""
    dtype = np.dtype(*args)
    _check_number_dtype(dtype)
    return dtype


def _check_number_dtype(dtype: np.dtype) -> None:
    if dtype.kind not in _NUMBER_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise pickle.UnpicklingError(f"GLOBAL numpy.dtype({dtype.str})")


def _latin1_bytes(text: Any, encoding: Any) -> bytes:
    """How protocol 2 spells ``bytes`` from Python 3: ``_codecs.encode(text, 'latin1')``; other codecs are refused."""
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError("GLOBAL _codecs.encode with a codec other than latin1")
    return text.encode("latin1")


def _empty_bytes(*args: Any) -> bytes:
    """How protocol 2 spells ``b''``: ``bytes()``; ``bytes(n)`` would zero-fill n bytes."""
    if args:
        raise pickle.UnpicklingError("GLOBAL builtins.bytes with arguments")
    return b""


def _array_from_buffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """Protocol 5 spells an array ``_frombuffer(bytes, dtype, shape, order)``: a view of bytes already read."""
    if not isinstance(buffer, (bytes, bytearray)) or not isinstance(dtype, np.dtype) or order not in ("C", "F"):
        raise pickle.UnpicklingError("GLOBAL numpy._frombuffer with arguments numpy never writes")
    _check_number_dtype(dtype)
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)


def _empty_array(subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
    """numpy pickles an array as ``_reconstruct(ndarray, (0,), b'b')`` and then its state; nothing else passes."""
    if subtype is not _NDARRAY or shape != (0,) or typecode != b"b":
        raise pickle.UnpicklingError("GLOBAL numpy._reconstruct with arguments numpy never writes")
    return np.ndarray((0,), dtype=np.int8)


class _NumpyOnlyUnpickler(BoundedUnpickler):
    """See the module docstring for the rules."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _RECONSTRUCT:
            return _empty_array
        if (module, name) in _FROMBUFFER:
            return _array_from_buffer
        if (module, name) == ("numpy", "dtype"):
            return _number_dtype
        if (module, name) == ("numpy", "ndarray"):
            return _NDARRAY
        if (module, name) == ("_codecs", "encode"):
            return _latin1_bytes
        if (module, name) in {("__builtin__", "bytes"), ("builtins", "bytes")}:
            return _empty_bytes
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"GLOBAL {module}.{name}")

    def load_build(self) -> None:
        target, state = self.stack[-2], self.stack[-1]
        if isinstance(target, np.dtype) and not _plain_dtype_state(state):
            raise pickle.UnpicklingError("GLOBAL numpy.dtype with fields or sub-arrays")
        super().load_build()

    dispatch: ClassVar[dict] = {**BoundedUnpickler.dispatch, pickle.BUILD[0]: load_build}


def _plain_dtype_state(state: Any) -> bool:
    """A number dtype's state: ``(version, byte order, None, None, None, size, alignment, flags)``."""
    return isinstance(state, tuple) and len(state) == 8 and state[2:5] == (None, None, None)
