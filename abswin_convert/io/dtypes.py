"""safetensors dtype names <-> numpy, with the floats numpy lacks (BF16, F8_E4M3, F8_E5M2) held as raw bits.

Raw arrays: BF16 is ``uint16`` bits, the F8 formats are ``uint8`` bits; every other dtype is its numpy dtype.
``from_float64`` rounds the way torch's ``.to(dtype)`` does from float64: to float32 first (round to nearest even),
then to the narrow format (round to nearest even again), so files written either way hold the same bits.
"""

from __future__ import annotations

import numpy as np

# safetensors name -> numpy dtype of the raw array (little-endian, as the format stores it)
RAW_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "F8_E4M3": np.dtype("u1"),
    "F8_E5M2": np.dtype("u1"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
# the largest size, stride or offset a tensor can have: torch keeps them as int64 (safetensors' readers too)
MAX_SIZE = 2**63 - 1
FLOAT_NAMES = ("F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2")
# safetensors name -> torch's name for the same dtype (``torch.float32`` -> "float32"), as reports print it
TORCH_NAMES: dict[str, str] = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2", "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
    "BOOL": "bool",
}
# numpy dtype -> name, for the dtypes numpy has (uint16/uint8 are ambiguous and never map back to BF16/F8)
NAMES: dict[np.dtype, str] = {
    v: k for k, v in RAW_DTYPES.items() if k not in ("BF16", "F8_E4M3", "F8_E5M2")
}


class DtypeError(ValueError):
    """A dtype name this module does not know, or a conversion it does not do."""


def raw_dtype(name: str) -> np.dtype:
    """The numpy dtype that holds ``name``'s raw elements."""
    try:
        return RAW_DTYPES[name]
    except KeyError:
        raise DtypeError(f"unknown safetensors dtype {name!r}; known: {', '.join(RAW_DTYPES)}") from None


def itemsize(name: str) -> int:
    return raw_dtype(name).itemsize


def name_of(dtype: np.dtype | type) -> str:
    """The safetensors name of a numpy dtype (raw bit containers such as uint16 name themselves, U16 is refused)."""
    dt = np.dtype(dtype).newbyteorder("<") if np.dtype(dtype).itemsize > 1 else np.dtype(dtype)
    try:
        return NAMES[dt]
    except KeyError:
        raise DtypeError(f"numpy dtype {np.dtype(dtype)} has no safetensors name here") from None


# ---- float8 tables -------------------------------------------------------------------------------------------

def _f8_values(exp_bits: int, man_bits: int, bias: int, ieee_specials: bool) -> np.ndarray:
    """Value of each of the 256 codes (float64). ``ieee_specials``: top exponent is inf/NaN (E5M2); otherwise
    only ``S.1111.111`` is NaN and there is no infinity (E4M3 'fn')."""
    codes = np.arange(256)
    sign = np.where(codes & 0x80, -1.0, 1.0)
    exp = (codes >> man_bits) & ((1 << exp_bits) - 1)
    man = codes & ((1 << man_bits) - 1)
    normal = (1 + man / (1 << man_bits)) * np.exp2(exp.astype(np.float64) - bias)
    subnormal = man / (1 << man_bits) * 2.0 ** (1 - bias)
    values = sign * np.where(exp == 0, subnormal, normal)
    top = exp == (1 << exp_bits) - 1
    if ieee_specials:
        values = np.where(top & (man == 0), sign * np.inf, np.where(top, np.nan, values))
    else:
        values = np.where(top & (man == (1 << man_bits) - 1), np.nan, values)
    return values


_F8 = {
    # name: (value of every code, largest positive code that rounding may reach, code of NaN)
    "F8_E4M3": (_f8_values(4, 3, 7, ieee_specials=False), 0x7E, 0x7F),  # saturates at 448, as torch does
    "F8_E5M2": (_f8_values(5, 2, 15, ieee_specials=True), 0x7C, 0x7F),  # overflows to inf (0x7C)
}


def _encode_f8(values: np.ndarray, name: str) -> np.ndarray:
    """Round float32 values to the nearest code, ties to the even code (what torch's conversion does)."""
    table, top, nan_code = _F8[name]
    ladder = table[: top + 1].copy()  # positive codes in increasing value
    if np.isinf(ladder[-1]):
        ladder[-1] = ladder[-2] + (ladder[-2] - ladder[-3])  # inf rounds like the next step (E5M2: 65536)
    mag = np.abs(values.astype(np.float64))
    hi = np.clip(np.searchsorted(ladder, mag, side="left"), 0, top)
    lo = np.maximum(hi - 1, 0)
    d_lo, d_hi = mag - ladder[lo], ladder[hi] - mag
    pick_hi = (d_hi < d_lo) | ((d_hi == d_lo) & (hi % 2 == 0))
    code = np.where(mag >= ladder[-1], top, np.where(pick_hi, hi, lo)).astype(np.uint8)
    code |= np.where(np.signbit(values), 0x80, 0).astype(np.uint8)
    return np.where(np.isnan(values), np.uint8(nan_code), code).astype(np.uint8)


# ---- conversions ---------------------------------------------------------------------------------------------

def to_float64(raw: np.ndarray, name: str) -> np.ndarray:
    """Decode a raw array of dtype ``name`` to float64 (exact for every format here)."""
    raw = np.asarray(raw)
    expected = raw_dtype(name)
    if raw.dtype.itemsize != expected.itemsize or raw.dtype.kind != expected.kind:
        raise DtypeError(f"a raw {name} array is {expected}, got {raw.dtype}")
    if name == "BF16":
        with np.errstate(invalid="ignore"):  # a signalling NaN is quieted, which numpy reports
            return (raw.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    if name in _F8:
        return _F8[name][0][raw]
    return raw.astype(np.float64)


def _f32_to_bf16_bits(values: np.ndarray) -> np.ndarray:
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = (bits + (np.uint32(0x7FFF) + ((bits >> 16) & 1))) >> 16  # round half to even on the cut bits
    quiet_nan = (bits >> 16) | 0x0040  # keep sign and top payload bits, force quiet (never rounds into inf)
    return np.where(np.isnan(values), quiet_nan, rounded).astype(np.uint16)


def _f32_to_f16(values: np.ndarray) -> np.ndarray:
    out = values.astype(np.float16)
    nan = np.isnan(values)
    if nan.any():  # torch quiets a NaN and keeps its top payload bits; numpy keeps a signalling one
        bits = values.view(np.uint32)
        torch_nan = ((bits >> 16) & 0x8000) | 0x7E00 | ((bits & 0x7FFFFF) >> 13)
        out = np.where(nan, torch_nan.astype(np.uint16).view(np.float16), out)
    return out


def from_float64(values: np.ndarray, name: str) -> np.ndarray:
    """Encode float64 values as raw ``name`` elements, rounding through float32 to nearest even; NaN stays NaN."""
    if name not in FLOAT_NAMES:
        raise DtypeError(f"from_float64 writes float dtypes ({', '.join(FLOAT_NAMES)}), not {name!r}")
    values = np.asarray(values, dtype=np.float64)
    if name == "F64":
        return values.copy()
    with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is the rounding rule, not an error
        f32 = values.astype(np.float32)
    if name == "F32":
        return f32
    if name == "F16":
        with np.errstate(over="ignore"):
            return _f32_to_f16(f32)
    if name == "BF16":
        return _f32_to_bf16_bits(f32)
    return _encode_f8(f32, name)
