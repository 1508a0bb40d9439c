"""dtype conversions bit for bit against torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from abswin_convert.io.dtypes import RAW_DTYPES, DtypeError, from_float64, itemsize, name_of, raw_dtype, to_float64

TORCH = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
         "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "I64": torch.int64, "I32": torch.int32,
         "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered in cast")  # signalling NaNs quieted
BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _torch_bits(values: np.ndarray, name: str) -> np.ndarray:
    """torch's encoding of float64 values, as raw bits of our raw dtype."""
    t = torch.from_numpy(values).to(TORCH[name])
    size = t.element_size()
    return t.view(BITS[size]).numpy().view(np.dtype(f"u{size}"))


def _edge_values() -> np.ndarray:
    rng = np.random.default_rng(0)
    f32_bits = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    rand32 = f32_bits.view(np.float32).astype(np.float64)
    # bf16 ties: low 16 bits exactly 0x8000, with odd and even kept parts; and f16 ties (13 cut bits = 0x1000)
    ties = (rng.integers(0, 2**16, 5000, dtype=np.uint32) << 16 | 0x8000).view(np.float32).astype(np.float64)
    f16_ties = ((rng.integers(0x33000, 0x47800, 5000, dtype=np.uint32) << 13) | 0x1000).view(np.float32)
    special = np.array([0.0, -0.0, np.inf, -np.inf, 1e-45, -1e-45, 1e-40, 5.9e-39, 1.17549435e-38, 3.4028235e38,
                        3.39e38, 65504.0, 65520.0, 65519.99, 6e-8, 3e-8, 2.9802322e-08, 448.0, 464.0, 465.0,
                        480.0, 57344.0, 61440.0, 61439.0, 1e300, -1e300, 1e-300, 1.00390625 + 2.0**-40])
    normal = rng.standard_normal(20_000) * np.exp2(rng.integers(-30, 30, 20_000))
    values = np.concatenate([rand32, ties, f16_ties.astype(np.float64), special, normal])
    return values


@pytest.mark.parametrize("name", ["F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"])
def test_from_float64_bit_for_bit(name: str) -> None:
    values = _edge_values()
    finite = ~np.isnan(values)
    ours = from_float64(values, name)
    ours_bits = ours.view(np.dtype(f"u{ours.dtype.itemsize}"))
    np.testing.assert_array_equal(ours_bits[finite], _torch_bits(values, name)[finite])
    # NaN: torch's bits differ between its scalar and vector paths; ours is a NaN either way
    assert np.isnan(to_float64(ours[~finite], name)).all()


@pytest.mark.parametrize("name", ["F16", "BF16", "F8_E4M3", "F8_E5M2"])
def test_to_float64_every_code(name: str) -> None:
    size = itemsize(name)
    codes = np.arange(2 ** (8 * size), dtype=np.dtype(f"u{size}"))
    t = torch.from_numpy(codes.view(np.dtype(f"i{size}")) if size > 1 else codes).view(TORCH[name])
    want = t.double().numpy()
    got = to_float64(codes.view(raw_dtype(name)), name)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(got[~np.isnan(got)], want[~np.isnan(want)])
    # every non-NaN code survives a round trip; signed zeros included
    back = from_float64(got, name).view(np.dtype(f"u{size}"))
    keep = ~np.isnan(got)
    np.testing.assert_array_equal(back[keep], codes[keep])


def test_bf16_round_trip_random_and_nan_payloads() -> None:
    rng = np.random.default_rng(1)
    values = rng.standard_normal(100_000).astype(np.float32).astype(np.float64)
    raw = from_float64(values, "BF16")
    np.testing.assert_array_equal(raw, _torch_bits(values, "BF16"))
    np.testing.assert_array_equal(to_float64(raw, "BF16"), torch.from_numpy(values).bfloat16().double().numpy())
    nans = np.array([0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF812345, 0x7FFFFFFF], np.uint32).view(np.float32)
    raw = from_float64(nans.astype(np.float64), "BF16")
    assert np.isnan(to_float64(raw, "BF16")).all()
    assert list(raw >> 15) == [0, 1, 0, 1, 0]  # the sign of a NaN is kept


def test_integers_and_names() -> None:
    for name in ("I64", "I32", "I16", "I8", "U8", "BOOL"):
        raw = np.array([0, 1, 1, 0], dtype=raw_dtype(name))
        np.testing.assert_array_equal(to_float64(raw, name), [0, 1, 1, 0])
    assert name_of(np.float32) == "F32" and name_of(np.dtype(">f8")) == "F64" and name_of(np.bool_) == "BOOL"
    assert set(RAW_DTYPES) == set(TORCH)
    for name, dt in TORCH.items():
        assert itemsize(name) == torch.empty(0, dtype=dt).element_size()
    with pytest.raises(DtypeError, match="unknown safetensors dtype"):
        raw_dtype("F4")
    with pytest.raises(DtypeError, match="float dtypes"):
        from_float64(np.zeros(2), "I32")
    with pytest.raises(DtypeError):
        to_float64(np.zeros(2, np.float32), "BF16")
    with pytest.raises(DtypeError):
        name_of(np.uint16)


@pytest.mark.parametrize("name", list(TORCH))
@pytest.mark.parametrize("shape", [(), (0,), (3, 1, 2)])
def test_torch_bridge_keeps_shape_dtype_and_bits(name: str, shape: tuple[int, ...]) -> None:
    # a 0-d tensor (BatchNorm's num_batches_tracked) stays 0-d; read-only and strided arrays are copied
    from abswin_convert.io.tensors import RawTensor
    from abswin_convert.io.torch_bridge import from_torch, to_torch

    rng = np.random.default_rng(len(shape))
    bits = rng.integers(0, 2, size=int(np.prod(shape)) * itemsize(name), dtype=np.uint8)
    raw = bits.view(raw_dtype(name)).reshape(shape)
    for variant in (raw, raw.copy(), np.asarray(raw).T):
        variant.setflags(write=variant is not raw)
        tensor = to_torch(RawTensor(name, variant))
        assert tensor.dtype == TORCH[name] and tuple(tensor.shape) == variant.shape
        back = from_torch(tensor)
        assert back.dtype == name and back.raw.shape == variant.shape
        assert back.raw.tobytes() == np.ascontiguousarray(variant).tobytes()
