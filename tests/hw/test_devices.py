"""Device table, lookup, roofline helpers and the cached CPU micro-benchmark."""

import json

import numpy as np
import pytest

from minillm.hw import devices
from minillm.hw.devices import DEVICES, Device, cpu_spec, get_device


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MINILLM_CACHE", str(tmp_path))
    return tmp_path


def test_published_figures():
    h100 = get_device("h100")
    assert h100.peak("bf16") == 989.4e12 and h100.bandwidth == 3.35e12
    assert h100.ridge_point("bf16") == pytest.approx(295.3, abs=0.1)
    assert get_device("a100").peak("fp16") == 312e12 and get_device("a100").bandwidth == 2.039e12
    assert get_device("tpu-v1").bandwidth == 34e9 and get_device("tpu-v1").clock_hz == 700e6
    assert get_device("tpu-v4").peak("bf16") == 275e12 and get_device("tpu-v4").mem_bytes == 32 * 2**30
    assert get_device("m2").bandwidth == 100e9
    for d in DEVICES.values():
        assert d.source and d.peak_flops and d.mem_bandwidth > 0 and d.mem_bytes > 0
        assert set(d.peak_flops) <= set(devices.DTYPES)


def test_lookup_is_forgiving_about_spelling_but_not_names():
    assert get_device("H100") is get_device(" h100 ") is DEVICES["h100"]
    assert get_device("TPU_v4") is get_device("tpuv4") is DEVICES["tpu-v4"]
    d = DEVICES["a100"]
    assert get_device(d) is d
    with pytest.raises(ValueError, match=r"unknown device 'h300'; choose one of \[.*'h100'.*'cpu'\]"):
        get_device("h300")
    with pytest.raises(ValueError, match="name must be a device name"):
        get_device(3)


def test_peak_and_attainable():
    d = get_device("h100")
    with pytest.raises(ValueError, match=r"dtype 'fp4' has no peak figure on device 'h100'; available"):
        d.peak("fp4")
    I = np.array([0.0, 1.0, 100.0, 295.0, 1000.0])
    np.testing.assert_array_equal(d.attainable(I, "fp16"),
                                  [min(989.4e12, 3.35e12 * i) for i in I])
    assert d.attainable(1e6, "fp16") == 989.4e12
    with pytest.raises(ValueError, match="intensity must be >= 0"):
        d.attainable(-1.0, "fp16")
    assert d.to_dict()["name"] == "h100"


def test_cpu_spec_measures_once_and_caches(cache_dir, monkeypatch):
    cpu = cpu_spec(measure=True)  # (no timing assertion: machines are shared and noisy)
    assert cpu.measured and cpu.name == "cpu"
    assert 1e8 < cpu.bandwidth < 1e13 and 1e8 < cpu.peak("fp32") < 1e14
    data = json.loads((cache_dir / "devices.json").read_text())
    (key, entry), = data.items()
    assert key == devices._cpu_key() and entry["fp32"] == cpu.peak("fp32")
    # the second call reads the cache: measuring again would fail
    monkeypatch.setattr(devices, "measure_cpu", lambda: pytest.fail("measured twice"))
    again = cpu_spec(measure=True)
    assert again.bandwidth == cpu.bandwidth and again.peak("fp32") == cpu.peak("fp32")
    assert get_device("cpu").bandwidth == cpu.bandwidth


def fake_measure():
    return {"mem_bandwidth": 2e10, "fp32": 1e11, "seconds": 0.0}


def test_cpu_spec_without_measuring(cache_dir, monkeypatch):
    monkeypatch.setattr(devices, "measure_cpu", lambda: pytest.fail("must not measure"))
    cpu = cpu_spec(measure=False)
    assert not cpu.measured and cpu.mem_bandwidth is None and cpu.peak_flops == {}
    with pytest.raises(ValueError, match="no memory bandwidth figure"):
        _ = cpu.bandwidth
    assert not (cache_dir / "devices.json").exists()


def test_cpu_cache_corrupt_or_refreshed(cache_dir, monkeypatch):
    calls = []
    monkeypatch.setattr(devices, "measure_cpu", lambda: calls.append(1) or fake_measure())
    (cache_dir / "devices.json").write_text("{not json")
    assert cpu_spec().bandwidth == 2e10 and len(calls) == 1  # corrupt file: measured again
    assert cpu_spec().bandwidth == 2e10 and len(calls) == 1  # now cached
    assert cpu_spec(measure=False).peak("fp32") == 1e11  # cache is used without measuring
    cpu_spec(refresh=True)
    assert len(calls) == 2
    # an entry with missing fields is not trusted
    (cache_dir / "devices.json").write_text(json.dumps({devices._cpu_key(): {"fp32": 1.0}}))
    assert cpu_spec().peak("fp32") == 1e11 and len(calls) == 3


def test_device_is_a_plain_dataclass():
    d = Device("x", "test", {"fp32": 1e9}, 1e9, 1, "made up")
    assert d.ridge_point("fp32") == 1.0 and not d.measured
