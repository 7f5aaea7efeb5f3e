"""Hardware emulation: what the silicon does to a model, in NumPy.

- `devices`: peak FLOP/s, bandwidth and memory of a few accelerators, and this CPU (measured);
- `roofline`: FLOPs and bytes of each op of a GPT step, predicted time, decode bound, plots;
- `systolic`: a weight-stationary systolic array (TPU v1's matrix unit), cycle by cycle;
- `tiling`: a blocked GPU matmul counting global- and shared-memory traffic;
- `fixedpoint`: TensorFlow Lite's integer-only requantization and an int8 linear layer;
- `floats`: rounding to bfloat16, float16, float8 (e4m3fn, e5m2) by bit manipulation.

Submodules are imported here so that ``minillm.hw.floats.round_to`` works after
``import minillm.hw``; matplotlib is only imported when a plot is drawn.
"""

from minillm.hw import devices, fixedpoint, floats, roofline, systolic, tiling
from minillm.hw.devices import Device, cpu_spec, get_device
from minillm.hw.roofline import format_report, roofline_plot, roofline_report

__all__ = [
    "Device",
    "cpu_spec",
    "devices",
    "fixedpoint",
    "floats",
    "format_report",
    "get_device",
    "roofline",
    "roofline_plot",
    "roofline_report",
    "systolic",
    "tiling",
]
