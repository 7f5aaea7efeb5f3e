"""Interchangeable compute backends, discovered by name.

`available()` lists the backends that import and run on this machine; `get(name)` returns one;
`unavailable()` says why the others do not. The NumPy backend (`numpy_.py`) is the reference;
the others override a few kernels: Numba (`numba_.py`, compiled CPU kernels that multiply by
quantized weights directly), CuPy (`cupy_.py`, the same kernels on an NVIDIA GPU, written
against an array namespace) and JAX (`jax_.py`, the whole step compiled by XLA). Parallel
execution over several devices is in `parallel.py`.
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

    ``"jax:bfloat16"`` names a backend with an option: ``get("jax").with_dtype("bfloat16")``.

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
    base, _, option = name.partition(":")
    if base not in _REGISTRY:
        raise ValueError(f"unknown backend {name!r}; choose one of {names()} (JAX also as 'jax:bfloat16')")
    if name not in _CACHE:
        if option:
            be = get(base)
            if not hasattr(be, "with_dtype"):
                raise ValueError(f"backend {base!r} takes no option, got {name!r}")
            _CACHE[name] = be.with_dtype(option)
            return _CACHE[name]
        module, cls, extra = _REGISTRY[name]
        try:
            mod = importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as e:
            if (e.name or "").startswith("minillm"):
                raise  # a bug in minillm, not a missing dependency
            hint = f"; install it with: pip install 'minillm[{extra}]'" if extra else ""
            raise BackendUnavailable(f"backend {name!r} is unavailable: {e}{hint}") from None
        _CACHE[name] = getattr(mod, cls)()  # may raise BackendUnavailable (e.g. no GPU)
    return _CACHE[name]


def unavailable() -> dict[str, str]:
    """Every known backend that does not work here, with the reason."""
    out = {}
    for name in names():
        try:
            get(name)
        except BackendUnavailable as e:
            out[name] = str(e)
    return out


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
