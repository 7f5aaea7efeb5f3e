r"""Device specs: peak FLOP/s per number format, memory bandwidth and size.

Two numbers decide how fast a model can run on a device (Williams et al. 2009):

- the **peak** arithmetic rate $\pi$ (FLOP/s, or integer op/s, for a given number format), and
- the memory **bandwidth** $\beta$ (bytes/s) between the big memory and the chip.

A kernel that does $I$ FLOPs per byte it moves (its *arithmetic intensity*) can at best reach

$$P(I) = \min(\pi,\ \beta I),$$

and the *ridge point* $I^* = \pi / \beta$ separates memory-bound kernels ($I < I^*$) from
compute-bound ones. The accelerators below carry their published figures (dense, i.e. without
2:4 structured sparsity, which vendors quote at twice the dense rate). This machine's CPU is
measured instead, by two micro-benchmarks that take about half a second:

- bandwidth: a float32 matrix-vector product over a 128 MiB matrix (4x a typical L3 cache), the
  access pattern of batch-1 decoding: bytes read / fastest run;
- peak: a 1024^3 float32 matrix product through NumPy's BLAS: $2n^3$ / fastest run

(each repeated for about 0.15 s, keeping the fastest run: the least disturbed one).

The measurement is cached as JSON in ``$MINILLM_CACHE/devices.json`` (default
``~/.cache/minillm``), keyed by host name, CPU model and core count.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["DEVICES", "Device", "bandwidth_probe", "cache_path", "cpu_spec", "fp32_peak", "get_device"]

# Number formats a device may quote a peak for ("int8" counts integer ops as FLOPs).
DTYPES = ("fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "int8")


@dataclass(frozen=True)
class Device:
    """A compute device as the roofline model sees it.

    Attributes
    ----------
    name : str
        Short name used by `get_device` (``"h100"``, ``"tpu-v1"``, ``"cpu"`` ...).
    description : str
        Human-readable model name.
    peak_flops : dict[str, float]
        Peak dense operations per second per number format (keys from ``DTYPES``).
    mem_bandwidth : float or None
        Main-memory bandwidth in bytes/s (None: unknown, e.g. an unmeasured CPU).
    mem_bytes : int or None
        Main-memory size in bytes.
    source : str
        Where the figures come from.
    on_chip_bytes : int or None
        On-chip memory (cache / SRAM / unified buffer) where it is a headline figure.
    clock_hz : float or None
        Clock of the matrix unit, where published (for converting systolic-array cycles).
    measured : bool
        True when the figures were measured on this machine.
    """

    name: str
    description: str
    peak_flops: dict[str, float]
    mem_bandwidth: float | None
    mem_bytes: int | None
    source: str
    on_chip_bytes: int | None = None
    clock_hz: float | None = None
    measured: bool = False
    info: dict[str, str] = field(default_factory=dict)

    def peak(self, dtype: str) -> float:
        """Peak op/s for `dtype`; ValueError naming the formats this device quotes."""
        if dtype not in self.peak_flops:
            raise ValueError(
                f"dtype {dtype!r} has no peak figure on device {self.name!r}; "
                f"available: {sorted(self.peak_flops)}"
            )
        return self.peak_flops[dtype]

    @property
    def bandwidth(self) -> float:
        """Memory bandwidth in bytes/s (ValueError if unknown)."""
        if self.mem_bandwidth is None:
            raise ValueError(f"device {self.name!r} has no memory bandwidth figure "
                             "(for the CPU, call cpu_spec(measure=True))")
        return self.mem_bandwidth

    def ridge_point(self, dtype: str) -> float:
        """Arithmetic intensity $\\pi/\\beta$ (FLOP/byte) where the roofline bends."""
        return self.peak(dtype) / self.bandwidth

    def attainable(self, intensity: ArrayLike, dtype: str) -> float | np.ndarray:
        """Roofline $\\min(\\pi, \\beta I)$ for intensity $I$ (FLOP/byte; scalar or array)."""
        I = np.asarray(intensity, dtype=np.float64)
        if np.any(I < 0) or np.any(np.isnan(I)):
            raise ValueError(f"intensity must be >= 0, got {intensity!r}")
        out = np.minimum(self.peak(dtype), self.bandwidth * I)
        return float(out) if out.ndim == 0 else out

    def to_dict(self) -> dict:
        return asdict(self)


GB = 10**9
GiB = 2**30
MiB = 2**20

DEVICES: dict[str, Device] = {}


def _register(d: Device) -> None:
    DEVICES[d.name] = d


# NVIDIA A100 SXM4 80GB. Source: NVIDIA A100 Tensor Core GPU datasheet (2021): FP64 9.7,
# FP64 Tensor 19.5, FP32 19.5, TF32 156, BF16/FP16 312, INT8 624 TOPS (dense; the datasheet's
# starred figures are 2x with sparsity); 80 GB HBM2e at 2,039 GB/s; 40 MB L2.
_register(Device(
    "a100", "NVIDIA A100 SXM4 80GB",
    {"fp64": 19.5e12, "fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12, "fp16": 312e12,
     "int8": 624e12},
    mem_bandwidth=2039 * GB, mem_bytes=80 * GB, on_chip_bytes=40 * MiB,
    source="NVIDIA A100 Tensor Core GPU datasheet (SXM4 80GB), dense figures",
))

# NVIDIA H100 SXM5 80GB. Source: NVIDIA H100 Tensor Core GPU datasheet: FP64 Tensor 67, FP32 67,
# TF32 989, BF16/FP16 1,979, FP8/INT8 3,958 TFLOPS/TOPS *with sparsity*; dense is half:
# TF32 494.7, BF16/FP16 989.4, FP8/INT8 1,978.9. 80 GB HBM3 at 3.35 TB/s; 50 MB L2.
_register(Device(
    "h100", "NVIDIA H100 SXM5 80GB",
    {"fp64": 66.9e12, "fp32": 66.9e12, "tf32": 494.7e12, "bf16": 989.4e12, "fp16": 989.4e12,
     "fp8": 1978.9e12, "int8": 1978.9e12},
    mem_bandwidth=3350 * GB, mem_bytes=80 * GB, on_chip_bytes=50 * MiB,
    source="NVIDIA H100 Tensor Core GPU datasheet (SXM5), dense = half the sparsity figures",
))

# NVIDIA H200 SXM 141GB. Source: NVIDIA H200 Tensor Core GPU datasheet: same Hopper compute as
# the H100 SXM (dense figures as above), 141 GB HBM3e at 4.8 TB/s.
_register(Device(
    "h200", "NVIDIA H200 SXM 141GB",
    {"fp64": 66.9e12, "fp32": 66.9e12, "tf32": 494.7e12, "bf16": 989.4e12, "fp16": 989.4e12,
     "fp8": 1978.9e12, "int8": 1978.9e12},
    mem_bandwidth=4800 * GB, mem_bytes=141 * GB, on_chip_bytes=50 * MiB,
    source="NVIDIA H200 Tensor Core GPU datasheet (SXM), dense = half the sparsity figures",
))

# Google TPU v1. Source: Jouppi et al. 2017, "In-Datacenter Performance Analysis of a Tensor
# Processing Unit" (ISCA): 256x256 8-bit MACs at 700 MHz = 92 TOPS, 8 GiB DDR3 at 34 GB/s,
# 28 MiB on chip (24 MiB Unified Buffer + 4 MiB accumulators). Inference only, int8 only.
_register(Device(
    "tpu-v1", "Google TPU v1",
    {"int8": 2 * 256 * 256 * 700e6},  # 9.18e13: the paper's "92 TOPS"
    mem_bandwidth=34 * GB, mem_bytes=8 * GiB, on_chip_bytes=28 * MiB, clock_hz=700e6,
    source="Jouppi et al. 2017, ISCA (TPU v1): 92 TOPS int8, 34 GB/s DDR3, 8 GiB",
))

# Google TPU v4 (one chip, two TensorCores). Source: Google Cloud TPU v4 documentation,
# "Peak compute per chip 275 teraflops (bf16 or int8); HBM2 32 GiB, 1200 GBps"; Jouppi et al.
# 2023, "TPU v4: An Optically Reconfigurable Supercomputer for Machine Learning" (ISCA).
_register(Device(
    "tpu-v4", "Google TPU v4 (per chip)",
    {"bf16": 275e12, "int8": 275e12},
    mem_bandwidth=1200 * GB, mem_bytes=32 * GiB,
    source="Google Cloud TPU v4 docs: 275 TFLOPS bf16/int8, 32 GiB HBM2 at 1200 GB/s",
))

# Apple M2 (10-core GPU). Source: Apple newsroom, "Apple unveils M2" (June 2022): GPU 3.6
# teraflops, 100 GB/s unified memory bandwidth, up to 24 GB unified memory. Apple quotes no
# half-precision or Neural Engine (15.8 TOPS, precision unstated) figure we could use here.
_register(Device(
    "m2", "Apple M2 (10-core GPU)",
    {"fp32": 3.6e12},
    mem_bandwidth=100 * GB, mem_bytes=24 * GiB,
    source="Apple newsroom, June 2022: M2 GPU 3.6 TFLOPS, 100 GB/s, up to 24 GB",
))

_ALIASES = {"tpuv1": "tpu-v1", "tpuv4": "tpu-v4", "a100-80gb": "a100", "h100-sxm": "h100",
            "apple-m2": "m2"}


def get_device(name: str | Device) -> Device:
    """Look up a device by name (case-insensitive, ``_`` or ``-``); ``"cpu"`` measures this CPU.

    >>> get_device("H100").peak("bf16")
    989400000000000.0
    """
    if isinstance(name, Device):
        return name
    if not isinstance(name, str):
        raise ValueError(f"name must be a device name string, got {name!r}")
    key = name.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, _ALIASES.get(key.replace("-", ""), key))
    if key == "cpu":
        return cpu_spec(measure=True)
    if key not in DEVICES:
        raise ValueError(f"unknown device {name!r}; choose one of {sorted(DEVICES) + ['cpu']}")
    return DEVICES[key]


# ----------------------------------------------------------------------------------------------
# This machine's CPU: measured, cached


def cache_path() -> Path:
    """``$MINILLM_CACHE/devices.json``, default ``~/.cache/minillm/devices.json``."""
    root = os.environ.get("MINILLM_CACHE") or os.path.join("~", ".cache", "minillm")
    return Path(root).expanduser() / "devices.json"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def _cpu_key() -> str:
    return f"{socket.gethostname()}|{_cpu_model()}|{os.cpu_count()} cpus"


def _ram_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _best_time(fn: Callable[[], object], min_repeats: int = 5, budget_s: float = 0.15) -> float:
    """Fastest of at least `min_repeats` runs, repeating while within `budget_s` (at most 100).

    The minimum is the run least disturbed by other processes on a shared machine.
    """
    fn()  # warm up (page faults, BLAS thread start-up)
    best, start = float("inf"), time.perf_counter()
    for i in range(100):
        if i >= min_repeats and time.perf_counter() - start > budget_s:
            break
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure_cpu(matrix_bytes: int = 128 * MiB, gemm_n: int = 1024) -> dict[str, float]:
    """Run the two micro-benchmarks (about half a second) and return bandwidth and fp32 peak.

    Returns
    -------
    dict
        ``{"mem_bandwidth": bytes/s, "fp32": FLOP/s, "seconds": wall time}``.
    """
    t_start = time.perf_counter()
    bandwidth = bandwidth_probe(matrix_bytes)()
    flops = fp32_peak(gemm_n)
    return {"mem_bandwidth": bandwidth, "fp32": flops, "seconds": time.perf_counter() - t_start}


def fp32_peak(gemm_n: int = 1024) -> float:
    """FLOP/s of one n x n float32 matrix product through NumPy's BLAS: $2n^3$ / fastest run."""
    A = np.ones((gemm_n, gemm_n), dtype=np.float32)
    return 2 * gemm_n**3 / _best_time(lambda: A @ A)


def bandwidth_probe(matrix_bytes: int = 128 * MiB) -> Callable[[], float]:
    """A function that measures this CPU's memory bandwidth *now*, in bytes/s: W @ v for a
    float32 W of about `matrix_bytes` (each weight read once, as in decoding), the fastest of
    about 0.15 s of runs. W is allocated once, so the probe can run between other measurements:
    on a shared machine the bandwidth moves within seconds (see `minillm bench --suite`)."""
    n = int(np.sqrt(matrix_bytes / 4))
    W = np.ones((n, n), dtype=np.float32)  # ones() touches every page before timing
    v = np.ones(n, dtype=np.float32)
    return lambda: W.nbytes / _best_time(lambda: W @ v)


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # missing or corrupt: measure again


def _write_cache(path: Path, data: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old or the new file
    except OSError:
        pass  # a read-only home is no reason to fail; we just measure again next time


def cpu_spec(measure: bool = True, refresh: bool = False) -> Device:
    """This machine's CPU as a `Device`, from the cache or by measuring it.

    Parameters
    ----------
    measure : bool
        If True and nothing is cached (or `refresh`), run `measure_cpu` and cache the result.
        If False, never measure: use the cache if present, else return a device whose
        bandwidth is None and whose peak table is empty.
    refresh : bool
        Ignore the cache and measure again (implies `measure`).
    """
    key = _cpu_key()
    path = cache_path()
    cache = _read_cache(path)
    entry = cache.get(key)
    valid = (isinstance(entry, dict) and isinstance(entry.get("mem_bandwidth"), (int, float))
             and isinstance(entry.get("fp32"), (int, float)))
    if refresh or (measure and not valid):
        entry = measure_cpu()
        entry["numpy"] = np.__version__
        entry["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        cache[key] = entry
        _write_cache(path, cache)
        valid = True
    info = {"key": key, "cache": str(path)}
    if not valid:
        return Device("cpu", f"{_cpu_model()} ({os.cpu_count()} cpus, not measured)", {}, None,
                      _ram_bytes(), "not measured: call cpu_spec(measure=True)", info=info)
    return Device(
        "cpu", f"{_cpu_model()} ({os.cpu_count()} cpus)", {"fp32": float(entry["fp32"])},
        float(entry["mem_bandwidth"]), _ram_bytes(),
        f"measured on this machine ({entry.get('measured_at', '?')}): float32 GEMV bandwidth, "
        "float32 GEMM via NumPy BLAS",
        measured=True, info=info,
    )
