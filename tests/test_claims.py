"""minillm.claims: the functions behind docs/claims.md and lesson 11 (the formulas themselves are
checked in tests/formulas/test_claims.py)."""

import numpy as np
import pytest

import minillm
from minillm import claims as C
from minillm.compress.quantize import quantize_params
from minillm.hw.devices import Device
from minillm.kinds import block_matmul_names

rng = np.random.default_rng(0)


def test_soft_threshold_validates_theta_and_keeps_dtype():
    x = np.array([1.0, -2.0], dtype=np.float32)
    assert C.soft_threshold(x, np.float32(0.5)).dtype == np.float32
    with pytest.raises(ValueError, match="theta must be >= 0"):
        C.soft_threshold(x, -0.1)
    with pytest.raises(ValueError, match="x must be finite"):
        C.soft_threshold([np.nan], 0.1)
    assert not np.signbit(C.soft_threshold(np.array([-0.1]), 0.5)).any()  # +0.0, not -0.0


def test_shrinkage_stats_of_identity_and_of_shrinkage():
    w = rng.normal(size=(20, 10))
    same = C.shrinkage_stats(w, w)
    assert same["rel_error"] == 0 and same["bias_toward_zero"] == 0 and same["distinct"] == 200
    shrunk = C.shrinkage_stats(w, C.soft_threshold(w, 0.5))
    assert shrunk["bias_toward_zero"] < 0
    assert shrunk["zero_fraction"] == pytest.approx(np.mean(np.abs(w) <= 0.5))
    with pytest.raises(ValueError, match="same shape"):
        C.shrinkage_stats(w, w[:5])


def test_soft_threshold_params_zeroes_what_int8_zeroes_and_nothing_else_changes():
    model = minillm.GPT(minillm.GPTConfig.preset("tiny"), seed=2)
    out = C.soft_threshold_params(model.params, 0.5)
    q = quantize_params(model.params, "int8")
    names = block_matmul_names(model.params)
    for name, w in model.params.items():
        if name in names:
            assert out[name].dtype == w.dtype
            np.testing.assert_array_equal(out[name] == 0, q[name].dequantize() == 0)
        else:
            assert out[name] is w
    with pytest.raises(ValueError, match="fraction_of_step"):
        C.soft_threshold_params(model.params, -1)
    with pytest.raises(TypeError, match="params must be a dict"):
        C.soft_threshold_params([1], 0.5)


def test_flow_shop_validation_and_gantt():
    with pytest.raises(ValueError, match="durations must be >= 0"):
        C.flow_shop([[1, -1]])
    with pytest.raises(ValueError, match="durations must be 2-D"):
        C.flow_shop([1, 2])
    with pytest.raises(ValueError, match="max_in_flight"):
        C.flow_shop([[1, 2]], max_in_flight=0)
    s = C.flow_shop([[1, 2, 1], [2, 1, 2]], max_in_flight=2)
    assert np.all(s.end - s.start == [[1, 2, 1], [2, 1, 2]])
    assert np.all(s.start[1] >= s.end[0])  # computed only after it arrived
    fig = C.gantt(s, ["link", "compute"])
    assert len(fig.axes[0].patches) == 6


def test_masked_loss_and_grads_rejects_bad_masks():
    model = minillm.GPT(minillm.GPTConfig.preset("tiny"), seed=0)
    idx = np.zeros((1, 4), dtype=int)
    with pytest.raises(ValueError, match="no matching parameter"):
        C.masked_loss_and_grads(model, {"nope": np.ones(3, bool)}, idx, idx)
    with pytest.raises(ValueError, match="must be bool of shape"):
        C.masked_loss_and_grads(model, {"h.0.mlp.c_fc.weight": np.ones((2, 2), bool)}, idx, idx)
    # an all-True mask changes nothing
    name = "h.0.mlp.c_fc.weight"
    loss, grads = C.masked_loss_and_grads(model, {name: np.ones(model.params[name].shape, bool)}, idx, idx)
    ref_loss, ref = model.loss_and_grads(idx, idx)
    assert loss == ref_loss
    np.testing.assert_array_equal(grads[name], ref[name])


def test_batch_sweep_rows():
    model = minillm.GPT(minillm.GPTConfig.preset("tiny"), seed=0)
    dev = Device("fake", "a fake device", {"fp32": 1e12}, mem_bandwidth=1e11, mem_bytes=None, source="test")
    rows = C.batch_sweep(model, (1, 3), prompt_tokens=4, new_tokens=4, repeat=1, device=dev)
    assert [r["batch"] for r in rows] == [1, 3]
    assert rows[0]["speedup"] == 1
    for r in rows:
        assert r["decode_tok_s"] > 0 and r["ms_per_step"] > 0
        assert r["memory_bound_tok_s"] == pytest.approx(r["batch"] * 1e11 / r["bytes_per_step"])


def test_quantized_speed_rows():
    model = minillm.GPT(minillm.GPTConfig.preset("tiny", n_embd=32), seed=0)
    dev = Device("fake", "a fake device", {"fp32": 1e12}, mem_bandwidth=1e11, mem_bytes=None, source="test")
    rows = C.quantized_speed(model, ("fp32", "q8_0"), backends=["numpy"], prompt_tokens=2, new_tokens=3,
                             repeat=1, device=dev)
    assert [(r["backend"], r["method"]) for r in rows] == [("numpy", "fp32"), ("numpy", "q8_0")]
    assert rows[0]["speedup"] == 1 and rows[0]["bytes_ratio"] == 1
    assert rows[1]["bytes_ratio"] == pytest.approx(rows[0]["bytes_per_token"] / rows[1]["bytes_per_token"])
    assert rows[1]["bytes_per_token"] < rows[0]["bytes_per_token"]
    assert rows[1]["memory_bound_tok_s"] == pytest.approx(1e11 / rows[1]["bytes_per_token"])


def test_kd_worked_example_matches():
    assert C.kd_worked_example()["matches"] == []
    r = C.kd_worked_example(claimed=0.197)
    assert r["matches"] == ["probabilities.kl_teacher_student"]
    assert C.kd_worked_example(claimed=0.69)["matches"] == ["probabilities.ce"]
