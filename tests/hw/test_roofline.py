"""Per-op FLOPs and bytes of a GPT step, predicted times and the report/plot functions."""

import io
import json

import numpy as np
import pytest

from minillm.config import GPTConfig
from minillm.hw.devices import Device, get_device
from minillm.hw.roofline import (
    OP_NAMES,
    WEIGHT_FORMATS,
    format_report,
    kv_cache_bytes,
    model_ops,
    roofline_plot,
    roofline_report,
    weight_bytes,
)

TINY = GPTConfig.preset("tiny")  # V=64, T=32, L=2, H=2, C=16


def matmul_flops(shapes):
    return sum(2 * m * k * n for m, k, n in shapes)


def test_decode_flops_by_hand():
    # tiny, batch 3, decode at context 10: every per-token matmul on 3 rows
    B, ell, C, V, L = 3, 10, 16, 64, 2
    ops = {op.name: op for op in model_ops(TINY, "fp32", "decode", batch=B, context=ell)}
    assert list(ops) == list(OP_NAMES)
    assert ops["qkv"].flops == L * matmul_flops([(B, C, 3 * C)])
    assert ops["attn_out"].flops == L * matmul_flops([(B, C, C)])
    assert ops["mlp_fc"].flops == ops["mlp_proj"].flops == L * matmul_flops([(B, C, 4 * C)])
    # each head: a (1 x d) @ (d x ell) score row and a (1 x ell) @ (ell x d) weighted sum
    d, H = TINY.head_size, TINY.n_head
    assert ops["attn_scores"].flops == ops["attn_values"].flops == L * B * H * 2 * d * ell
    assert ops["lm_head"].flops == matmul_flops([(B, C, V)])
    assert ops["layernorm"].flops == 7 * C * (2 * L * B + B)


def test_prefill_flops_are_causal():
    P = 12
    ops = {op.name: op for op in model_ops(TINY, "fp32", "prefill", prompt_len=P)}
    pairs = sum(i + 1 for i in range(P))  # query i attends to keys 0..i
    assert ops["attn_scores"].flops == 2 * 2 * pairs * 16
    assert ops["qkv"].flops == 2 * matmul_flops([(P, 16, 48)])
    assert ops["lm_head"].flops == matmul_flops([(1, 16, 64)])  # last position only
    all_logits = {op.name: op for op in model_ops(TINY, "fp32", "prefill", prompt_len=P,
                                                  all_logits=True)}
    assert all_logits["lm_head"].flops == matmul_flops([(P, 16, 64)])


def test_weight_bytes_are_all_parameters_but_positions():
    # fp32 weights, fp32 vectors: 4 bytes for every parameter except the T x C position table
    for name in ("tiny", "teacher", "gpt2"):
        cfg = GPTConfig.preset(name)
        assert weight_bytes(cfg, "fp32") == 4 * (cfg.n_params - cfg.block_size * cfg.n_embd)
        ops = model_ops(cfg, "fp32", "decode", context=1)
        assert sum(op.weight_bytes for op in ops) == weight_bytes(cfg, "fp32")


def test_block_formats_bytes():
    cfg = GPTConfig.preset("gpt2")
    C, V, L = 768, 50257, 12
    matrix_weights = L * 12 * C * C + V * C
    vectors = L * 13 * C + 2 * C
    assert weight_bytes(cfg, "q8_0", "fp16") == matrix_weights * 34 // 32 + 2 * vectors
    assert weight_bytes(cfg, "q4_0", "fp16") == matrix_weights * 18 // 32 + 2 * vectors
    assert weight_bytes(cfg, "int4-g32", "fp16") == matrix_weights * 37 // 64 + 2 * vectors
    # int8: one float32 scale per output column (3C + C + 4C + C per layer, V for the head)
    assert weight_bytes(cfg, "int8", "fp16") == matrix_weights + 4 * (L * 9 * C + V) + 2 * vectors
    assert weight_bytes(cfg, "bf16", "bf16") == 2 * (matrix_weights + vectors)
    assert WEIGHT_FORMATS["q4_0"].bytes_per_weight == 18 / 32
    # a ragged last block is stored whole: C = 16 inputs occupy one 32-block
    assert WEIGHT_FORMATS["q4_0"].matrix_bytes(16, 10) == 18 * 10


def test_kv_cache_bytes():
    cfg = GPTConfig.preset("gpt2")
    assert kv_cache_bytes(cfg, 1024, batch=2, act_dtype="fp16") == 2 * 12 * 2 * 1024 * 768 * 2
    ops = model_ops(cfg, "fp32", "decode", batch=2, context=1024, act_dtype="fp16")
    assert sum(op.kv_bytes for op in ops) == kv_cache_bytes(cfg, 1024, 2, "fp16")


def test_report_predicts_by_roofline():
    r = roofline_report("gpt2", "q4_0", "h100", "decode", context=1024)
    assert r["act_dtype"] == "fp16" and r["compute_dtype"] == "fp16"
    peak, bw = 989.4e12, 3.35e12
    ops = model_ops("gpt2", "q4_0", "decode", context=1024, act_dtype="fp16")
    time_s = sum(max(op.flops / peak, op.bytes / bw) for op in ops)
    assert r["total"]["time_s"] == pytest.approx(time_s, rel=1e-12)
    assert r["total"]["tokens_per_s"] == pytest.approx(1 / time_s)
    total_bytes = sum(op.bytes for op in ops)
    assert r["total"]["memory_bound_tokens_per_s"] == pytest.approx(bw / total_bytes)
    assert all(row["bound"] == "memory" for row in r["ops"])  # batch-1 decode
    assert r["total"]["tokens_per_s"] <= r["total"]["memory_bound_tokens_per_s"] * (1 + 1e-12)
    json.dumps(r)  # the CLI can print it as JSON
    for row in r["ops"]:
        assert row["attainable_flops"] == pytest.approx(min(peak, bw * row["intensity"]))


def test_report_batching_moves_ops_to_compute_bound():
    small = roofline_report("gpt2", "fp16", "h100", "prefill", prompt_len=1024, batch=8)
    bounds = {row["name"]: row["bound"] for row in small["ops"]}
    assert bounds["mlp_fc"] == "compute" and bounds["layernorm"] == "memory"
    assert small["tokens"] == 8 * 1024 and small["prompt_len"] == 1024


def test_dtype_resolution():
    # quantized weights on a CPU-like device compute in fp32 with fp32 activations
    cpu = Device("cpu", "test cpu", {"fp32": 1e11}, 2e10, None, "made up")
    r = roofline_report("teacher", "q8_0", cpu, "decode", context=64)
    assert r["act_dtype"] == "fp32" and r["compute_dtype"] == "fp32"
    # fp16 weights on it: fp16 activations, fp32 arithmetic
    r = roofline_report("teacher", "fp16", cpu, "decode", context=64)
    assert r["act_dtype"] == "fp16" and r["compute_dtype"] == "fp32"
    assert roofline_report("teacher", "q4_0", "tpu-v4")["act_dtype"] == "bf16"
    assert roofline_report("teacher", "int8", "tpu-v1")["compute_dtype"] == "int8"
    with pytest.raises(ValueError, match=r"device 'tpu-v1' quotes peaks only for \['int8'\]"):
        roofline_report("teacher", "fp32", "tpu-v1")


def test_validation():
    with pytest.raises(ValueError, match=r"weights must be one of \['fp32'.*'int4-g32'\], got 'q5'"):
        model_ops(TINY, "q5")
    with pytest.raises(ValueError, match="phase must be 'prefill' or 'decode'"):
        model_ops(TINY, "fp32", "train")
    with pytest.raises(ValueError, match="context=33 exceeds block_size=32"):
        model_ops(TINY, "fp32", "decode", context=33)
    with pytest.raises(ValueError, match="prompt_len must be a positive int"):
        model_ops(TINY, "fp32", "prefill", prompt_len=0)
    with pytest.raises(ValueError, match="batch must be a positive int"):
        model_ops(TINY, "fp32", batch=0)
    with pytest.raises(ValueError, match="act_dtype must be one of"):
        model_ops(TINY, "fp32", act_dtype="fp64")
    with pytest.raises(ValueError, match="unknown preset"):
        model_ops("gpt5")
    with pytest.raises(ValueError, match="unknown device"):
        roofline_report(TINY, "fp32", "tpu-v9")


def test_format_report_mentions_everything():
    text = format_report(roofline_report("gpt2", "q4_0", "h100", "decode", context=1024))
    for word in (*OP_NAMES, "h100", "q4_0", "tokens/s", "decode, batch 1, context 1024", "assumes"):
        assert word in text
    assert "prefill, batch 2, prompt 5" in format_report(
        roofline_report(TINY, "fp32", "a100", "prefill", prompt_len=5, batch=2))


def test_roofline_plot():
    from matplotlib.figure import Figure

    fig = roofline_plot(["h100", "tpu-v1"], points=[("decode", 2.6, 8e12)])
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    lines = [ln for ln in ax.get_lines() if len(ln.get_xdata()) > 2]
    assert len(lines) == 2
    x, y = lines[0].get_xdata(), lines[0].get_ydata()
    np.testing.assert_allclose(y, np.minimum(1978.9e12, 3.35e12 * x))  # h100 top: fp8
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:4] == b"\x89PNG"
    fig2 = roofline_plot("a100", dtype="fp16")
    y2 = fig2.axes[0].get_lines()[0].get_ydata()
    assert y2.max() == 312e12
    with pytest.raises(ValueError, match="points must be"):
        roofline_plot("h100", points=[("bad", -1, 1)])
    with pytest.raises(ValueError, match="no peak figure"):
        roofline_plot("m2", dtype="bf16")
    assert get_device("m2").peak("fp32") == 3.6e12
