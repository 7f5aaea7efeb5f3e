"""Quantization: REFERENCES.md examples, llama.cpp bit-exactness, error bounds, validation."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minillm.compress import quantize as Q
from minillm.kinds import Q4_0, Q8_0, Int8PerChannel, IntPerGroup, TiedEmbedding

rng = np.random.default_rng(0)


# REFERENCES.md: PyTorch qint8 symmetric example.


def test_torch_symmetric_example():
    qt = Q.quantize(np.array([-1, -0.5, 0, 0.3, 2]), convention="torch")
    assert qt.scale == np.float32(2 / 127.5)  # 0.015686275
    assert f"{float(qt.scale):.9f}" == "0.015686275"
    np.testing.assert_array_equal(qt.q, [-64, -32, 0, 19, 127])
    assert qt.zero_point == 0 and qt.q.dtype == np.int8


def test_absmax_symmetric_by_hand():
    # s = 2/127: x/s = [-63.5, -31.75, 0, 19.05, 127]; -63.5 ties to even -64
    qt = Q.quantize(np.array([-1, -0.5, 0, 0.3, 2]))
    assert qt.scale == np.float32(2) / np.float32(127)
    np.testing.assert_array_equal(qt.q, [-64, -32, 0, 19, 127])


def test_affine_by_hand():
    # range [-1, 3]: s = 4/255, z = -128 - rint(-63.75) = -64; 3/s = 191.25 -> 191 - 64 = 127
    qt = Q.quantize(np.array([-1.0, 0.0, 3.0]), symmetric=False)
    assert qt.scale == np.float32(4) / np.float32(255)
    assert qt.zero_point == -64
    np.testing.assert_array_equal(qt.q, [-128, -64, 127])
    np.testing.assert_array_equal(Q.dequantize(qt)[1], 0.0)  # zero is exact


def test_range_is_widened_to_contain_zero():
    qt = Q.quantize(np.array([1.0, 2.0]), symmetric=False)  # range [0, 2], not [1, 2]
    assert qt.scale == np.float32(2) / np.float32(255) and qt.zero_point == -128


def test_round_half_to_even():
    # s = 1 exactly; 2.5 -> 2, 3.5 -> 4, -2.5 -> -2
    qt = Q.quantize(np.array([2.5, 3.5, -2.5, 127.0]))
    assert qt.scale == 1
    np.testing.assert_array_equal(qt.q, [2, 4, -2, 127])


@pytest.mark.parametrize("bits", range(2, 9))
def test_bits_set_the_code_range(bits):
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    assert Q.qrange(bits) == (qmin, qmax)
    x = np.linspace(-3, 5, 101)
    for symmetric in (True, False):
        q = Q.quantize(x, bits=bits, symmetric=symmetric).q
        assert q.min() >= qmin and q.max() == qmax


def test_all_zero_and_constant_inputs():
    for symmetric in (True, False):
        qt = Q.quantize(np.zeros((4, 3)), symmetric=symmetric, axis=1)
        assert np.all(qt.q == qt.zero_point) and np.all(qt.scale == Q.EPS)
        assert np.all(Q.dequantize(qt) == 0)
    c = np.full(32, -0.7, np.float32)  # a constant block: both ends of the range are exact
    for symmetric in (True, False):
        qt = Q.quantize(c, symmetric=symmetric)
        assert np.all(qt.q == qt.q[0])
        assert abs(Q.dequantize(qt)[0] + 0.7) <= 1e-7


def test_per_channel_is_per_tensor_per_slice():
    x = rng.normal(size=(6, 5, 4)).astype(np.float32)
    for axis in (0, 1, -1):
        qt = Q.quantize(x, symmetric=False, axis=axis)
        assert qt.scale.shape == (x.shape[axis],) and qt.axis == axis % 3
        for i in range(x.shape[axis]):
            ref = Q.quantize(np.take(x, i, axis=axis), symmetric=False)
            np.testing.assert_array_equal(np.take(qt.q, i, axis=axis), ref.q)
            assert qt.scale[i] == ref.scale and qt.zero_point[i] == ref.zero_point


def test_per_group_is_per_tensor_per_group():
    x = rng.normal(size=(64, 3)).astype(np.float32)
    qt = Q.quantize(x, bits=4, symmetric=False, group_size=16)
    assert qt.scale.shape == (4, 3)
    for g in range(4):
        for o in range(3):
            ref = Q.quantize(x[16 * g : 16 * (g + 1), o], bits=4, symmetric=False)
            np.testing.assert_array_equal(qt.q[16 * g : 16 * (g + 1), o], ref.q)
            assert qt.scale[g, o] == ref.scale


def test_fake_quantize_and_quantize_with():
    x = np.array([-1.0, 0.0, 0.24, 3.0])
    out = Q.fake_quantize(x, 0.5, 1, bits=4)  # codes rint(x/0.5) + 1, clamped to [-8, 7]
    np.testing.assert_array_equal(out, [-1.0, 0.0, 0.0, 3.0])
    out = Q.fake_quantize(np.array([10.0, -10.0]), 0.5, 0, bits=4)  # clamped at 7, -8
    np.testing.assert_array_equal(out, [3.5, -4.0])


# Properties (hypothesis). Float slack: x * (1/s) has two float32 roundings (relative 2^-24
# each) and s * (q - z) one, so |x - deq| <= s/2 + 2^-23 |x| + 2^-24 |deq|.

finite = st.floats(-1e4, 1e4, allow_nan=False, width=32)
arrays = hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=2, max_side=16), elements=finite)
settings_ = settings(max_examples=60, deadline=None)


def _layouts(x):
    yield {}
    yield {"axis": x.ndim - 1}
    if x.shape[0] % 4 == 0:
        yield {"group_size": 4}


@settings_
@given(arrays, st.integers(2, 8), st.booleans(), st.sampled_from(Q.CONVENTIONS))
def test_error_at_most_half_a_step(x, bits, symmetric, convention):
    for layout in _layouts(x):
        qt = Q.quantize(x, bits=bits, symmetric=symmetric, convention=convention, **layout)
        deq = Q.dequantize(qt)
        s = qt.scale_per_element()
        slack = 2.0**-23 * np.abs(x) + 2.0**-24 * np.abs(deq)
        assert np.all(np.abs(x.astype(np.float64) - deq) <= s / 2 + slack)
        assert not np.any(np.isnan(deq))


@settings_
@given(arrays, st.integers(2, 8), st.booleans())
def test_codes_are_fixed_points(x, bits, symmetric):
    for layout in _layouts(x):
        qt = Q.quantize(x, bits=bits, symmetric=symmetric, **layout)
        again = Q.quantize_with(Q.dequantize(qt), qt.scale, qt.zero_point, bits, **layout)
        np.testing.assert_array_equal(again.q, qt.q)
        if symmetric:  # and with the scale re-derived from the dequantized values
            np.testing.assert_array_equal(Q.quantize(Q.dequantize(qt), bits, **layout).q, qt.q)


@settings_
@given(st.integers(1, 64), finite, st.integers(2, 8), st.booleans())
def test_constant_and_zero_blocks(n, c, bits, symmetric):
    x = np.full(32 * n, c, np.float32)
    qt = Q.quantize(x, bits, symmetric, group_size=32)
    deq = Q.dequantize(qt)
    assert np.all(np.isfinite(deq)) and np.all(qt.q == qt.q[0])
    assert np.all(np.abs(deq - c) <= qt.scale[0] / 2 + 2.0**-22 * abs(c))
    zero = Q.quantize(np.zeros_like(x), bits, symmetric, group_size=32)
    assert np.all(Q.dequantize(zero) == 0) and np.all(zero.scale == Q.EPS)
    for fmt, deq_fmt, q_max in ((Q.q8_0, Q.dequantize_q8_0, 127), (Q.q4_0, Q.dequantize_q4_0, 8)):
        assert np.all(deq_fmt(*fmt(np.zeros(32 * n))) == 0)
        qs, d = fmt(x)
        # c is the block's max, so it lands on code +-q_max exactly; only storing d in fp16
        # errs: half an fp16 ulp, 2^-11 relative, or 2^-25 absolute among the subnormals
        err = np.abs(deq_fmt(qs, d) - c)
        assert np.all(err <= q_max * (2.0**-11 * abs(c) / q_max + 2.0**-25))


# llama.cpp formats.


def _roundf(v):
    """C roundf for a float32 value: |v| + 0.5 is exact in float64, so floor is exact."""
    return math.copysign(math.floor(abs(float(v)) + 0.5), float(v))


def _q8_0_scalar(block):
    """A literal transcription of ggml-quants.c quantize_row_q8_0_ref for one block."""
    amax = np.float32(0)
    for v in block:
        amax = max(amax, abs(v))
    d = np.float32(amax / np.float32(127))
    inv = np.float32(1) / d if d else np.float32(0)
    return [int(_roundf(np.float32(v * inv))) for v in block], np.float16(d)


def _q4_0_scalar(block):
    """A literal transcription of quantize_row_q4_0_ref for one block (before packing)."""
    amax, mx = np.float32(0), np.float32(0)
    for v in block:
        if amax < abs(v):
            amax, mx = abs(v), v
    d = np.float32(mx / np.float32(-8))
    inv = np.float32(1) / d if d else np.float32(0)
    return [min(15, int(np.float32(v * inv) + np.float32(8.5))) for v in block], np.float16(d)


def test_q8_0_reference_example():
    x = np.zeros(32, np.float32)
    x[:6] = [127, 0.5, 1.5, 2.5, -0.5, -2.5]
    qs, d = Q.q8_0(x)
    assert d.dtype == np.float16 and d[0] == 1.0
    np.testing.assert_array_equal(qs[:6], [127, 1, 2, 3, -1, -3])  # ties away from zero
    np.testing.assert_array_equal(Q.dequantize_q8_0(qs, d)[:7], [127, 1, 2, 3, -1, -3, 0])


def test_q4_0_reference_example():
    x = np.zeros(32, np.float32)
    x[:6] = [-8, 7, 0.5, -0.5, 1.5, 3.2]
    qs, d = Q.q4_0(x)
    assert d[0] == 1.0
    np.testing.assert_array_equal(qs[:6], [0, 15, 9, 8, 10, 11])
    np.testing.assert_array_equal(Q.dequantize_q4_0(qs, d)[:6], [-8, 7, 1, 0, 2, 3])


def test_q4_0_signed_max_first_on_ties_and_clip():
    x = np.zeros(32, np.float32)
    x[3], x[7] = -3, 3  # |x| ties: the first one (-3) sets d = -3 / -8
    qs, d = Q.q4_0(x)
    assert d[0] == np.float16(0.375)
    assert qs[3] == 0 and qs[7] == 15  # 3/0.375 + 8.5 = 16.5 -> 16, clipped to 15
    x[3], x[7] = 3, -3
    assert Q.q4_0(x)[1][0] == np.float16(-0.375)


def test_q_formats_match_scalar_transcription_and_fp32_scale_is_used():
    x = (rng.standard_t(3, size=(32 * 8, 5)) * 0.05).astype(np.float32)
    x[:32, 0] = 0  # an all-zero block: d = 0, codes 0 (Q8_0) and 8 (Q4_0)
    qs8, d8 = Q.q8_0(x)
    qs4, d4 = Q.q4_0(x)
    for b in range(8):
        for o in range(5):
            block = x[32 * b : 32 * (b + 1), o]
            q, d = _q8_0_scalar(block)
            assert qs8[32 * b : 32 * (b + 1), o].tolist() == q and d8[b, o] == d
            q, d = _q4_0_scalar(block)
            assert qs4[32 * b : 32 * (b + 1), o].tolist() == q and d4[b, o] == d
    assert np.all(qs8[:32, 0] == 0) and np.all(qs4[:32, 0] == 8)
    # Quantizing with the float16 d instead would change some codes: the test can tell.
    d16 = np.repeat(d8.astype(np.float32), 32, axis=0)
    inv = np.divide(1, d16, out=np.zeros_like(d16), where=d16 != 0)
    assert np.any(Q.round_half_away(x * inv) != qs8)


def test_q_formats_match_gguf():
    gguf = pytest.importorskip("gguf", reason="gguf (llama.cpp's Python package) is the oracle")
    from gguf.quants import dequantize as g_deq
    from gguf.quants import quantize as g_quant

    w = (rng.normal(size=(96, 7)) * 0.1).astype(np.float32)  # Conv1D (in, out)
    rows = np.ascontiguousarray(w.T)  # ggml rows run along the input dimension
    q8 = Q.quantize_weight(w, "q8_0")
    q4 = Q.quantize_weight(w, "q4_0")
    for kind, t, per_block in (
        (q8, gguf.GGMLQuantizationType.Q8_0, 34),
        (q4, gguf.GGMLQuantizationType.Q4_0, 18),
    ):
        raw = g_quant(rows, t).reshape(7, 3, per_block)  # (out, blocks, bytes)
        d = raw[..., :2].copy().view(np.float16)[..., 0]  # (out, blocks)
        np.testing.assert_array_equal(d.T, kind.d)
        ours = kind.qs if kind is q8 else kind.packed
        theirs = raw[..., 2:].transpose(1, 2, 0).reshape(ours.shape)  # (blocks*bytes, out)
        np.testing.assert_array_equal(theirs.view(ours.dtype), ours)
        np.testing.assert_array_equal(g_deq(g_quant(rows, t), t).T, kind.dequantize())
    assert q8.nbytes == g_quant(rows, gguf.GGMLQuantizationType.Q8_0).nbytes
    assert q4.nbytes == g_quant(rows, gguf.GGMLQuantizationType.Q4_0).nbytes


def test_round_half_away():
    v = np.array([0.5, 1.5, 2.5, -0.5, -2.5, 0.49999997, -0.49999997, 2.4], np.float32)
    np.testing.assert_array_equal(Q.round_half_away(v), [1, 2, 3, -1, -3, 0, 0, 2])


def test_pack_unpack_q4_0():
    codes = np.concatenate([np.arange(16), np.arange(15, -1, -1)]).astype(np.uint8)
    packed = Q.pack_q4_0(codes)
    assert packed.shape == (16,) and packed[0] == 0xF0 and packed[15] == 0x0F
    np.testing.assert_array_equal(Q.unpack_q4_0(packed), codes)
    many = rng.integers(0, 16, size=(64, 3)).astype(np.uint8)
    np.testing.assert_array_equal(Q.unpack_q4_0(Q.pack_q4_0(many)), many)
    kind = Q4_0(Q.pack_q4_0(many), np.ones((2, 3), np.float16))
    np.testing.assert_array_equal(kind.codes(), many)


# Weights to kinds.


def test_quantize_weight_methods():
    w = rng.normal(size=(64, 24)).astype(np.float32)
    k = Q.quantize_weight(w, "int8")
    assert isinstance(k, Int8PerChannel)
    np.testing.assert_array_equal(k.scale, np.abs(w).max(axis=0) / np.float32(127))
    assert k.nbytes == 64 * 24 + 4 * 24

    k = Q.quantize_weight(w, "q8_0")
    assert isinstance(k, Q8_0) and k.nbytes == 64 * 24 // 32 * 34
    np.testing.assert_array_equal(k.dequantize(), Q.dequantize_q8_0(*Q.q8_0(w)))

    k = Q.quantize_weight(w, "q4_0")
    assert isinstance(k, Q4_0) and k.nbytes == 64 * 24 // 32 * 18
    np.testing.assert_array_equal(k.dequantize(), Q.dequantize_q4_0(*Q.q4_0(w)))

    k = Q.quantize_weight(w, "int4-g32")
    assert isinstance(k, IntPerGroup) and k.bits == 4 and k.group_size == 32
    assert k.scale.dtype == np.float16 and k.zero_point.shape == (2, 24)
    assert k.nbytes * 8 / w.size == 4.625  # 4 + 16/32 (fp16 scale) + 4/32 (zero point)
    scale = np.repeat(k.scale.astype(np.float32), 32, axis=0)
    assert np.all(np.abs(k.dequantize() - w) <= scale / 2 + 2.0**-22 * np.abs(w))
    lo = np.minimum(w.reshape(2, 32, 24).min(axis=1), 0)  # scale rounded *up* to float16
    hi = np.maximum(w.reshape(2, 32, 24).max(axis=1), 0)
    assert np.all(k.scale.astype(np.float32) >= (hi - lo) / np.float32(15))

    k3 = Q.quantize_weight(w, "int3-g16")
    assert k3.bits == 3 and k3.scale.shape == (4, 24)


def test_quantize_params():
    C = 32
    params = {
        "wte.weight": rng.normal(size=(50, C)).astype(np.float32),
        "h.0.ln_1.weight": np.ones(C, np.float32),
        "h.0.attn.c_attn.weight": rng.normal(size=(C, 3 * C)).astype(np.float32),
        "h.0.attn.c_attn.bias": np.zeros(3 * C, np.float32),
        "h.0.attn.c_proj.weight": rng.normal(size=(C, C)).astype(np.float32),
        "h.0.mlp.c_fc.weight": rng.normal(size=(C, 4 * C)).astype(np.float32),
        "h.0.mlp.c_proj.weight": rng.normal(size=(4 * C, C)).astype(np.float32),
    }
    out = Q.quantize_params(params, "q8_0")
    assert out is not params and params["h.0.mlp.c_fc.weight"].dtype == np.float32
    for name in params:
        if name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
            assert isinstance(out[name], Q8_0) and out[name].shape == params[name].shape
        elif name == "wte.weight":  # the tied head, quantized per vocabulary entry
            assert isinstance(out[name], TiedEmbedding) and isinstance(out[name].head, Q8_0)
            assert out[name].shape == (50, C) and out[name].head.shape == (C, 50)
            head = Q.quantize_weight(params[name].T, "q8_0")  # the head (C, V), quantized per vocab entry
            np.testing.assert_array_equal(out[name].dequantize(), head.dequantize().T)
        else:
            assert out[name] is params[name]
    assert Q.quantize_params(params, "q8_0", skip=("wte.weight",))["wte.weight"] is params["wte.weight"]
    out = Q.quantize_params(params, "int8", skip=("*.mlp.*",))
    assert out["h.0.mlp.c_fc.weight"] is params["h.0.mlp.c_fc.weight"]
    assert isinstance(out["h.0.attn.c_proj.weight"], Int8PerChannel)
    bad = dict(params, **{"h.0.attn.c_proj.weight": np.ones((C + 1, C), np.float32)})
    with pytest.raises(ValueError, match=r"h\.0\.attn\.c_proj\.weight: .*multiple of 32"):
        Q.quantize_params(bad, "q4_0")


# Calibration observers.


def test_minmax_observer_over_batches():
    batches = [rng.normal(size=(5, 8)) * (i + 1) for i in range(3)]
    obs = Q.MinMaxObserver()
    for b in batches:
        obs.update(b)
    allx = np.concatenate(batches)
    scale, zp = obs.qparams()
    ref = Q.quantize(allx, symmetric=False)
    assert scale == ref.scale and zp == ref.zero_point
    per_ch = Q.MinMaxObserver(symmetric=True, axis=1)
    for b in batches:
        per_ch.update(b)
    np.testing.assert_array_equal(per_ch.qparams()[0], Q.quantize(allx, axis=1).scale)
    with pytest.raises(ValueError, match="channels along axis 1"):
        per_ch.update(np.ones((2, 3)))
    with pytest.raises(ValueError, match="seen no data"):
        Q.MinMaxObserver().qparams()


def test_percentile_observer():
    obs = Q.PercentileObserver(percentile=99)
    obs.update(np.arange(0, 51, dtype=np.float32)).update(np.arange(51, 101, dtype=np.float32))
    assert obs.range() == (1.0, 99.0)  # linear interpolation over 0..100
    full = Q.PercentileObserver(percentile=100).update(np.array([-1.0, 0.5, 3.0]))
    np.testing.assert_array_equal(full.qparams(), Q.MinMaxObserver().update([-1.0, 0.5, 3.0]).qparams())
    sym = Q.PercentileObserver(percentile=100, symmetric=True).update(np.array([-4.0, 1.0]))
    assert sym.range() == (-4.0, 4.0)
    outlier = Q.PercentileObserver(percentile=99.9).update(np.concatenate([np.zeros(9999), [1e3]]))
    assert outlier.range()[1] < 1.0  # the one outlier does not set the range


# Validation.


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: Q.quantize([1.0], bits=1), "bits must be an int in 2..8, got 1"),
        (lambda: Q.quantize([1.0], bits=9), "bits must be an int in 2..8, got 9"),
        (lambda: Q.quantize([1.0], bits=4.0), "bits must be an int in 2..8, got 4.0"),
        (lambda: Q.quantize([1.0, np.nan]), "x must be finite .* nan"),
        (lambda: Q.quantize([1.0, np.inf]), "x must be finite .* inf"),
        (lambda: Q.quantize(np.ones((2, 3)), axis=2), r"axis must be in \[-2, 1\]"),
        (lambda: Q.quantize(np.ones((6, 3)), group_size=4), "group_size=4 must divide axis 0"),
        (lambda: Q.quantize(np.ones((8, 3)), axis=1, group_size=4), "axis or group_size, not both"),
        (lambda: Q.quantize([1.0], convention="llama"), "convention must be one of"),
        (lambda: Q.quantize(np.ones(0)), "x must not be empty"),
        (lambda: Q.quantize_with([1.0], 0.0, 0), "scale must be > 0"),
        (
            lambda: Q.quantize_with(np.ones((2, 3)), np.ones(2), np.zeros(2), axis=1),
            r"shape \(3,\)",
        ),
        (lambda: Q.q8_0(np.ones(31)), "multiple of 32"),
        (lambda: Q.q8_0(np.full(32, 1e7)), "overflows float16"),
        (lambda: Q.q4_0(np.full(32, np.nan)), "x must be finite"),
        (lambda: Q.dequantize_q4_0(np.full(32, 16, np.uint8), np.ones(1, np.float16)), "0..15"),
        (lambda: Q.dequantize_q8_0(np.ones(32, np.int8), np.ones(2, np.float16)), "d \\(K/32"),
        (lambda: Q.quantize_weight(np.ones((32, 2)), "int4"), "method must be one of"),
        (lambda: Q.quantize_weight(np.ones((32, 2)), "int9-g32"), "method must be one of"),
        (lambda: Q.quantize_weight(np.ones(32), "int8"), "w must be 2-D"),
        (lambda: Q.MinMaxObserver(bits=0), "bits must be an int in 2..8"),
        (lambda: Q.PercentileObserver(percentile=101), "percentile must be in"),
        (lambda: Q.dequantize(np.ones(3)), "qt must be a QTensor"),
    ],
)
def test_validation(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


# PyTorch as an oracle (bit-exact codes and parameters).


@pytest.mark.reference
def test_matches_torch():
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for this test")
    x = (rng.normal(size=(64, 9)) * 3).astype(np.float32)
    tx = torch.from_numpy(x)
    for qscheme, symmetric in (
        (torch.per_tensor_affine, False),
        (torch.per_tensor_symmetric, True),
    ):
        obs = torch.ao.quantization.MinMaxObserver(dtype=torch.qint8, qscheme=qscheme)
        obs(tx)
        t_scale, t_zp = obs.calculate_qparams()
        qt = Q.quantize(x, symmetric=symmetric, convention="torch")
        assert qt.scale == t_scale.item() and qt.zero_point == t_zp.item()
        ref = torch.quantize_per_tensor(tx, t_scale.item(), int(t_zp), torch.qint8)
        np.testing.assert_array_equal(qt.q, ref.int_repr().numpy())
        np.testing.assert_array_equal(Q.dequantize(qt), ref.dequantize().numpy())
    obs = torch.ao.quantization.PerChannelMinMaxObserver(ch_axis=1, dtype=torch.qint8, qscheme=torch.per_channel_affine)
    obs(tx)
    t_scale, t_zp = obs.calculate_qparams()
    qt = Q.quantize(x, symmetric=False, axis=1, convention="torch")
    np.testing.assert_array_equal(qt.scale, t_scale.numpy())
    np.testing.assert_array_equal(qt.zero_point, t_zp.numpy())
    ref = torch.fake_quantize_per_channel_affine(tx, t_scale, t_zp.int(), 1, -128, 127)
    np.testing.assert_array_equal(Q.dequantize(qt), ref.numpy())
    fq = torch.fake_quantize_per_tensor_affine(tx, 0.05, 3, -8, 7)
    np.testing.assert_array_equal(Q.fake_quantize(x, 0.05, 3, bits=4), fq.numpy())


# Integer-only inference: calibration here, integer arithmetic in minillm.hw.fixedpoint.


def test_calibrated_int8_linear():
    fixedpoint = pytest.importorskip(
        "minillm.hw.fixedpoint", reason="minillm.hw.fixedpoint (integer kernels) not present"
    )
    r = np.random.default_rng(5)
    w, b = r.normal(size=(16, 8)) * 0.3, r.normal(size=8) * 0.1
    batches = [r.normal(size=(32, 16)) for _ in range(3)]
    layer = Q.calibrated_int8_linear(w, b, batches)
    x = np.concatenate(batches)
    y = x @ w + b
    ref = fixedpoint.QuantizedLinear.from_float(w, b, (x.min(), x.max()), (y.min(), y.max()))
    assert (layer.x_scale, layer.x_zp, layer.y_scale, layer.y_zp) == (
        ref.x_scale,
        ref.x_zp,
        ref.y_scale,
        ref.y_zp,
    )
    np.testing.assert_array_equal(layer.w_q, ref.w_q)
    x_q = fixedpoint.quantize(x, layer.x_scale, layer.x_zp)
    assert layer(x_q).dtype == np.int8
    # Error budget per output: input rounding (S_x/2 * sum|w|), weight rounding
    # (S_w/2 * sum|x|), bias rounding (S_x S_w / 2), output rounding plus the fixed-point
    # multiplier's own rounding (one output step S_y in all).
    bound = (
        layer.x_scale / 2 * np.abs(w).sum(axis=0)
        + layer.w_scale / 2 * np.abs(x).sum(axis=1, keepdims=True)
        + layer.x_scale * layer.w_scale / 2
        + layer.y_scale
    )
    assert np.all(np.abs(layer.forward(x) - y) <= bound)
    clipped = Q.calibrated_int8_linear(w, b, x, percentile=99.0)
    assert clipped.x_scale < layer.x_scale  # the percentile range is narrower
    with pytest.raises(ValueError, match=r"x_calibration batches must have shape \(\.\.\., 16\)"):
        Q.calibrated_int8_linear(w, b, np.ones((2, 3)))


def test_quantize_params_names_the_weight_that_is_already_a_kind():
    params = {"h.0.mlp.c_fc.weight": np.ones((32, 8), np.float32)}
    once = Q.quantize_params(params, "q8_0")
    with pytest.raises(TypeError, match=r"h\.0\.mlp\.c_fc\.weight: w must be a dense array"):
        Q.quantize_params(once, "int8")
