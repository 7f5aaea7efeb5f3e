"""Interchangeable compute backends, discovered by name.

`available()` lists the backends that import and run on this machine; `get(name)` returns one.
The NumPy backend is the reference; the others (Numba, CuPy, JAX) override a few kernels.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> (module, class, the pip extra that provides its dependency)
_REGISTRY: dict[str, tuple[str, str, str | None]] = {
    "numpy": ("numpy_", "NumpyBackend", None),
    "numba": ("numba_", "NumbaBackend", "numba"),
    "cupy": ("cupy_", "CupyBackend", "cuda"),
    "jax": ("jax_", "JaxBackend", "jax"),
}
_CACHE: dict[str, Any] = {}


class BackendUnavailable(RuntimeError):
    """A backend's library is missing or its device is absent."""


def names() -> list[str]:
    """Every backend minillm knows, available here or not."""
    return list(_REGISTRY)


def get(name: str | Any = "numpy") -> Any:
    """Return the backend called `name` (an already-built backend object passes through).

    Raises
    ------
    ValueError
        If `name` is not a known backend.
    BackendUnavailable
        If its library is not installed (the message names the extra to install) or its
        device is absent.
    """
    if not isinstance(name, str):
        if hasattr(name, "linear") and hasattr(name, "xp"):
            return name
        raise TypeError(f"backend must be a name such as 'numpy', got {type(name).__name__}")
    if name not in _REGISTRY:
        raise ValueError(f"unknown backend {name!r}; choose one of {names()}")
    if name not in _CACHE:
        module, cls, extra = _REGISTRY[name]
        try:
            mod = importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as e:
            hint = f"; install it with: pip install 'minillm[{extra}]'" if extra else ""
            raise BackendUnavailable(f"backend {name!r} is unavailable: {e}{hint}") from None
        _CACHE[name] = getattr(mod, cls)()
    return _CACHE[name]


def available() -> list[str]:
    """Names of the backends that work on this machine."""
    out = []
    for name in names():
        try:
            get(name)
        except BackendUnavailable:
            continue
        out.append(name)
    return out
