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
