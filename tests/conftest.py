"""Shared fixtures: small models that every test can build in milliseconds."""

from __future__ import annotations

import numpy as np
import pytest

import minillm


@pytest.fixture
def tiny_config() -> minillm.GPTConfig:
    return minillm.GPTConfig.preset("tiny")


@pytest.fixture
def tiny_model(tiny_config) -> minillm.GPT:
    return minillm.GPT(tiny_config, seed=1)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def fake_suite(monkeypatch) -> list[float]:
    """`bench.bench_suite` with every measurement faked, for tests of its bookkeeping.

    The bandwidth probe reads 10, 20, 30, ... GB/s, one more step at every call, and a decode
    entry's tokens/s is 1 + the number of probes so far: any mix-up of which entry gets which
    figure shows as a wrong number. Returns the probe's figures (bytes/s), a list that grows."""
    from minillm import bench
    from minillm.hw import devices

    probes: list[float] = []

    def probe_factory():
        def probe():
            probes.append(10e9 * (len(probes) + 1))
            return probes[-1]

        return probe

    def fake_decode(model, backend, prompt, new, repeat, bandwidth_gb_s):
        return {"decode_tok_s": 1.0 + len(probes), "prefill_tok_s": 1.0, "bytes_per_token": 10**9,
                "achieved_gb_s": 1.0, "bandwidth_gb_s": bandwidth_gb_s, "roofline_tok_s": bandwidth_gb_s,
                "roofline_frac": round(1.0 / bandwidth_gb_s, 3), "warmup_s": 0.0}  # fmt: skip

    monkeypatch.setattr(bench, "SETTLE_S", 0.0)
    monkeypatch.setattr(bench, "GPT", lambda *a, **k: "a model")
    monkeypatch.setattr(bench, "with_weights", lambda model, weights: model)
    monkeypatch.setattr(bench, "bench_decode", fake_decode)
    monkeypatch.setattr(bench, "bench_products", lambda *a, **k: {})
    monkeypatch.setattr(devices, "bandwidth_probe", probe_factory)
    monkeypatch.setattr(devices, "fp32_peak", lambda: 1e11)
    monkeypatch.setattr("minillm.io.load", lambda name: "the teacher")
    return probes
