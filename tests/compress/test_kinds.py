"""Weight kinds: shapes, honest byte counts, dequantize/matmul agreement, validation."""

import numpy as np
import pytest

from minillm.kinds import (
    KINDS,
    Q4_0,
    Q8_0,
    Int8PerChannel,
    IntPerGroup,
    LowRank,
    Masked,
    NMSparse,
    as_dense,
    block_matmul_names,
    is_kind,
    stored_bytes,
)

rng = np.random.default_rng(0)
IN, OUT = 64, 24


def examples():
    """One hand-built instance of every kind, with the dense weight it stands for."""
    q = rng.integers(-127, 128, size=(IN, OUT)).astype(np.int8)
    s = rng.uniform(0.01, 0.1, size=OUT).astype(np.float32)
    yield Int8PerChannel(q, s), q.astype(np.float32) * s

    q4 = rng.integers(-8, 8, size=(IN, OUT)).astype(np.int8)
    s16 = rng.uniform(0.01, 0.1, size=(IN // 32, OUT)).astype(np.float16)
    zp = rng.integers(-8, 8, size=(IN // 32, OUT)).astype(np.int8)
    per_input = lambda a: np.repeat(a.astype(np.float32), 32, axis=0)  # noqa: E731
    dense = (q4.astype(np.float32) - per_input(zp)) * per_input(s16)
    yield IntPerGroup(q4, s16, zp, 4, 32), dense

    d = rng.uniform(0.01, 0.1, size=(IN // 32, OUT)).astype(np.float16)
    yield Q8_0(q, d), q.astype(np.float32) * np.repeat(d.astype(np.float32), 32, 0)

    codes = rng.integers(0, 16, size=(IN, OUT)).astype(np.uint8)
    blocks = codes.reshape(IN // 32, 32, OUT)
    packed = (blocks[:, :16] | (blocks[:, 16:] << 4)).reshape(IN // 2, OUT)
    yield Q4_0(packed, d), (codes.astype(np.float32) - 8) * np.repeat(d.astype(np.float32), 32, 0)

    a = rng.normal(size=(IN, 5)).astype(np.float32)
    b = rng.normal(size=(5, OUT)).astype(np.float32)
    yield LowRank(a, b), a @ b

    values = rng.normal(size=(IN // 2, OUT)).astype(np.float32)
    idx = np.tile(np.array([[0], [3]], np.uint8), (IN // 4, OUT))  # keep positions 0 and 3
    w = np.zeros((IN, OUT), np.float32)
    w[0::4], w[3::4] = values[0::2], values[1::2]
    yield NMSparse(values, idx), w

    w = rng.normal(size=(IN, OUT)).astype(np.float32)
    mask = rng.random((IN, OUT)) < 0.3
    yield Masked(w, mask), np.where(mask, w, 0)


@pytest.mark.parametrize("kind, dense", list(examples()), ids=lambda v: type(v).__name__)
def test_dequantize_and_matmul(kind, dense):
    assert kind.shape == dense.shape == (IN, OUT)
    deq = kind.dequantize()
    assert deq.dtype == np.float32
    if isinstance(kind, LowRank):  # a @ b recomputed in float32: rounding only
        np.testing.assert_allclose(deq, dense, rtol=1e-6, atol=1e-5)
    else:  # integer codes times float16/32 scales: exact in float32
        np.testing.assert_array_equal(deq, dense.astype(np.float32))
    x = rng.normal(size=(3, 2, IN)).astype(np.float32)
    # float32 sums in another order: tolerance a few ulps of sum |x||w|
    bound = 1e-5 * (np.abs(x) @ np.abs(dense.astype(np.float64)))
    assert np.all(np.abs(kind.matmul(x) - x.astype(np.float64) @ dense) <= bound + 1e-6)
    assert is_kind(kind) and not is_kind(dense)
    np.testing.assert_array_equal(as_dense(kind), deq)
    with pytest.raises(ValueError, match=rf"x must have shape \(\.\.\., {IN}\)"):
        kind.matmul(np.ones((2, IN + 1), np.float32))


def test_nbytes_and_n_params_are_honest():
    kinds = {type(k).__name__: k for k, _ in examples()}
    n = IN * OUT
    assert kinds["Int8PerChannel"].nbytes == n + 4 * OUT
    # 4-bit codes packed, fp16 scales, 4-bit zero points: 4 + 16/32 + 4/32 bits per weight
    assert kinds["IntPerGroup"].nbytes == n // 2 + 2 * n // 32 + n // 64
    assert kinds["Q8_0"].nbytes == n // 32 * 34
    assert kinds["Q4_0"].nbytes == n // 32 * 18
    assert kinds["LowRank"].nbytes == 4 * 5 * (IN + OUT)
    assert kinds["LowRank"].n_params == 5 * (IN + OUT)
    # 2:4: half the values in float32 plus a 2-bit index for each
    assert kinds["NMSparse"].nbytes == 4 * n // 2 + (n // 2) * 2 // 8
    masked = kinds["Masked"]
    nnz = int(masked.mask.sum())
    assert masked.nbytes == 4 * n  # dense layout: zeros are stored too
    assert masked.nbytes_csr == nnz * 8 + (IN + 1) * 4
    assert masked.n_params == nnz
    assert kinds["Q4_0"].n_params == n and kinds["Q8_0"].n_params == n
    assert stored_bytes(np.zeros((IN, OUT), np.float32)) == 4 * n
    assert stored_bytes(masked) == masked.nbytes


def test_q4_0_codes_layout():
    # byte j of a block = element j (low nibble) | element j + 16 (high nibble)
    packed = np.zeros((16, 1), np.uint8)
    packed[0, 0] = 0xF1  # element 0 -> 1, element 16 -> 15
    codes = Q4_0(packed, np.ones((1, 1), np.float16)).codes()[:, 0]
    assert codes[0] == 1 and codes[16] == 15 and codes.sum() == 16


def test_block_matmul_names():
    params = {
        "wte.weight": 0,
        "h.0.ln_1.weight": 0,
        "h.0.attn.c_attn.weight": 0,
        "h.0.attn.c_attn.bias": 0,
        "h.0.attn.c_proj.weight": 0,
        "h.0.mlp.c_fc.weight": 0,
        "h.0.mlp.c_proj.weight": 0,
        "h.1.mlp.c_fc.weight": 0,
    }
    assert block_matmul_names(params) == [
        "h.0.attn.c_attn.weight",
        "h.0.attn.c_proj.weight",
        "h.0.mlp.c_fc.weight",
        "h.0.mlp.c_proj.weight",
        "h.1.mlp.c_fc.weight",
    ]
    assert block_matmul_names(params, skip=("h.0.*",)) == ["h.1.mlp.c_fc.weight"]
    with pytest.raises(TypeError, match="skip must be a tuple"):
        block_matmul_names(params, skip="h.0.*")


def test_kinds_are_immutable():
    kind, _ = next(examples())
    with pytest.raises(AttributeError):
        kind.q = None
    assert len(KINDS) == 8


def z(shape, dtype):
    return np.zeros(shape, dtype)


def o(shape, dtype=np.float32):
    return np.ones(shape, dtype)


u8 = lambda rows: np.array(rows, np.uint8)  # noqa: E731


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: Int8PerChannel(z((4, 3), np.int16), o(3)), "q must have dtype int8"),
        (lambda: Int8PerChannel(z((4, 3), np.int8), o(4)), r"scale must have shape \(3,\)"),
        (
            lambda: Int8PerChannel(z((4, 3), np.int8), np.array([1, np.nan, 1], np.float32)),
            "scale must be finite",
        ),
        (
            lambda: IntPerGroup(z((8, 2), np.int8), o((2, 2), np.float16), None, 9, 4),
            "bits must be an int in 2..8, got 9",
        ),
        (
            lambda: IntPerGroup(z((8, 2), np.int8), o((2, 2), np.float16), None, 4, 3),
            "group_size must be a positive int dividing in=8, got 3",
        ),
        (
            lambda: IntPerGroup(np.full((8, 2), 8, np.int8), o((2, 2), np.float16), None, 4, 4),
            r"q codes must lie in \[-8, 7\]",
        ),
        (lambda: Q8_0(z((33, 2), np.int8), o((1, 2), np.float16)), "in divisible by 32"),
        (lambda: Q8_0(z((32, 2), np.int8), o((1, 2))), "d must have dtype float16"),
        (lambda: Q4_0(z((16, 2), np.uint8), o((2, 2), np.float16)), r"d must have shape \(1, 2\)"),
        (lambda: LowRank(o((4, 2)), o((3, 5))), "matching r"),
        (lambda: LowRank(o((4, 0)), o((0, 5))), "rank must be at least 1"),
        (
            lambda: NMSparse(o((4, 2)), u8([[0, 0], [0, 0], [0, 0], [1, 1]])),
            "increasing positions",
        ),
        (
            lambda: NMSparse(o((4, 2)), u8([[0, 0], [4, 4], [0, 0], [1, 1]])),
            "increasing positions in 0..3",
        ),
        (lambda: Masked(o((4, 2)), o((4, 2), np.int8)), "mask must have dtype bool"),
        (lambda: Masked(o((4, 2)), o((2, 4), bool)), r"mask must have shape \(4, 2\)"),
    ],
)
def test_validation(build, match):
    with pytest.raises((ValueError, TypeError), match=match):
        build()


def test_every_kind_runs_through_the_model():
    """GPT.forward dispatches on the kinds: same logits as with their dense weights."""
    import minillm
    from minillm.compress import lowrank, prune, quantize

    cfg = minillm.GPTConfig.preset("tiny", n_embd=32, n_head=2)
    model = minillm.GPT(cfg, seed=0)
    idx = np.random.default_rng(1).integers(0, cfg.vocab_size, size=(2, 9))
    variants = {m: quantize.quantize_params(model.params, m) for m in ("int8", "q4_0", "int4-g32")}
    variants["lowrank"] = lowrank.factorize_params(model.params, "all", fraction=0.5)
    masks = prune.global_magnitude_masks(model.params, 0.5)
    variants["masked"] = prune.masked_params(model.params, masks)
    variants["2:4"] = {k: prune.nm_sparse(v) if k in masks else v for k, v in model.params.items()}
    for name, params in variants.items():
        assert any(is_kind(v) for v in params.values()), name
        dense = {k: as_dense(v) for k, v in params.items()}
        got = minillm.GPT(cfg, params=params).forward(idx)
        want = minillm.GPT(cfg, params=dense).forward(idx)
        # float32 matmuls in another order (factored scale, two-step low rank): rounding only
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=name)


# The tied embedding: a quantized head (C, V) that is also the (V, C) lookup table.
@pytest.mark.parametrize("method", ["int8", "q8_0", "q4_0", "int4-g32"])
def test_tied_embedding_rows_and_head(method):
    from minillm.compress.quantize import quantize_weight
    from minillm.kinds import TiedEmbedding

    rng = np.random.default_rng(3)
    wte = rng.normal(0, 0.02, size=(50, 64)).astype(np.float32)  # (V, C)
    tied = TiedEmbedding(quantize_weight(wte.T, method))
    dense = tied.dequantize()  # (V, C), float64-free reference: the head's dequantized transpose
    assert tied.shape == (50, 64) == dense.shape and tied.nbytes == tied.head.nbytes
    np.testing.assert_array_equal(dense, tied.head.dequantize().T)
    assert np.abs(dense - wte).max() < 0.02  # it is a quantization of wte
    idx = np.array([[0, 7, 7], [49, 3, 0]])
    np.testing.assert_array_equal(tied.rows(idx), dense[idx])  # only those rows, exactly
    x = rng.normal(size=(3, 64)).astype(np.float32)
    np.testing.assert_allclose(tied.matmul_t(x), x @ dense.T, rtol=1e-5, atol=1e-6)
    v = rng.normal(size=(2, 50)).astype(np.float32)  # the kind interface: v @ W_te, (2, V) -> (2, C)
    np.testing.assert_allclose(tied.matmul(v), v @ dense, rtol=1e-5, atol=1e-6)


def test_tied_embedding_refuses_heads_it_cannot_slice():
    from minillm.kinds import LowRank, TiedEmbedding

    with pytest.raises(TypeError, match="head must be one of Int8PerChannel, IntPerGroup, Q8_0, Q4_0"):
        TiedEmbedding(LowRank(np.ones((4, 2), np.float32), np.ones((2, 8), np.float32)))
    with pytest.raises(TypeError, match="got ndarray"):
        TiedEmbedding(np.ones((4, 8), np.float32))
