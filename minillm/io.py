"""Files: minillm checkpoints and Hugging Face GPT-2 directories, safetensors + JSON, never pickle.

**safetensors** (read and written here by hand) is the simplest tensor file there is:

    [8 bytes: N, little-endian u64] [N bytes: JSON header] [data bytes]

The header maps each tensor name to ``{"dtype": "F32", "shape": [V, C], "data_offsets": [a, b]}``:
its little-endian values are bytes $a..b$ of the data section, with $b - a = 4\\prod \\text{shape}$
for F32. Reading one is parsing JSON and slicing bytes, so a corrupt file can at worst give wrong
numbers (which the checks below catch), never run code, as unpickling a ``.bin`` file can.

**A minillm checkpoint** is a directory:

- ``model.safetensors`` — every parameter as F32, named as in `minillm.nn.gpt.param_shapes`;
- ``tokenizer.json`` — the tokenizer (`minillm.tokenizer.tokenizer_to_json`), if the model has one;
- ``config.json`` — ``{"minillm_format_version": 1, "config": GPTConfig.to_dict(), "files":
  {name: "sha256:..."}}``: the shape, plus the SHA-256 of each file saved with it.

**Atomic saves.** Each file is written to a temporary file in the same directory, flushed to disk
(``fsync``) and renamed over the old one (``os.replace``, atomic on POSIX and Windows). All files
are staged before the first rename, and ``config.json`` is renamed last: a save that fails while
writing (full disk, a crash, Ctrl-C) leaves the previous checkpoint untouched, and files from two
different saves can never be loaded together, because ``load`` checks each file's SHA-256 against
``config.json``.

**Checks on load.** A truncated or corrupt file, a tensor missing from or extra to what the config
implies, a wrong shape or dtype, a NaN or infinity: each raises `CheckpointError` (a ValueError)
naming the file and the tensor.

**Hugging Face GPT-2.** `load_gpt2` / `save_gpt2` read and write the directory that
``transformers.GPT2LMHeadModel.save_pretrained`` writes (``config.json`` + ``model.safetensors``,
optionally ``vocab.json`` + ``merges.txt``). Its state dict has our names behind a
``transformer.`` prefix, and Hugging Face's ``Conv1D`` already stores weights as (in, out), the
layout of $y = xW + b$, so no transposes are needed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import struct
import uuid
import warnings
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import GPTConfig
from .kinds import is_kind
from .tokenizer import CharTokenizer, GPT2Tokenizer, tokenizer_from_json, tokenizer_to_json

if TYPE_CHECKING:  # the model imports nothing from here; importing it at run time is lazy
    from .nn.gpt import GPT

__all__ = [
    "CheckpointError",
    "SHIPPED_MODELS",
    "load",
    "load_gpt2",
    "read_safetensors",
    "save",
    "save_gpt2",
    "write_safetensors",
]

FORMAT_VERSION = 1
SHIPPED_MODELS = ("teacher", "student-scratch", "student-distilled",  # trained
                  "teacher-prune50", "teacher-2of4", "teacher-lowrank50",  # fine-tuned after compression
                  "teacher-ft400")  # the control: dense, fine-tuned the same 400 steps
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

WEIGHTS_FILE, CONFIG_FILE, TOKENIZER_FILE = "model.safetensors", "config.json", "tokenizer.json"
# A char tokenizer has no Hugging Face file format: save_gpt2 stores it under a name HF ignores.
HF_MINILLM_TOKENIZER = "minillm_tokenizer.json"

MAX_HEADER_BYTES = 100 * 2**20  # the safetensors library's own limit on the JSON header

# safetensors dtype name -> little-endian NumPy dtype. BF16 is read as raw 16-bit words.
ST_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "BF16": "<u2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}
NP_TO_ST = {
    np.dtype(np.float64): "F64",
    np.dtype(np.float32): "F32",
    np.dtype(np.float16): "F16",
    np.dtype(np.int64): "I64",
    np.dtype(np.int32): "I32",
    np.dtype(np.int16): "I16",
    np.dtype(np.int8): "I8",
    np.dtype(np.uint8): "U8",
    np.dtype(np.bool_): "BOOL",
}


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt or does not match its config."""


# ------------------------------------------------------------------------------------------
# Atomic files: stage (temp file + fsync), then commit (os.replace).
def _chunks_sha256(chunks: Iterable[bytes], f: Any) -> str:
    sha = hashlib.sha256()
    for chunk in chunks:
        f.write(chunk)
        sha.update(chunk)
    return "sha256:" + sha.hexdigest()


def _stage(path: Path, chunks: Iterable[bytes]) -> tuple[Path, str]:
    """Write `chunks` to a fresh temp file beside `path`, fsync it; return (temp path, sha256)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            digest = _chunks_sha256(chunks, f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return tmp, digest


def _fsync_dir(directory: Path) -> None:
    # Make the renames themselves durable (POSIX); Windows cannot open a directory for this.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _commit(staged: list[tuple[Path, Path]]) -> None:
    """Rename each staged temp file over its target, in order; clean up what is left on failure."""
    try:
        for tmp, path in staged:
            os.replace(tmp, path)
    finally:
        for tmp, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    _fsync_dir(staged[0][1].parent)


def _save_files(
    directory: Path,
    files: list[tuple[str, Callable[[], Iterable[bytes]]]],
    last: tuple[str, Callable[[dict], Iterable[bytes]]] | None = None,
) -> dict[str, str]:
    """Stage every file, then `last` (made from the others' digests), then commit them in order.

    Returns name -> ``"sha256:..."`` of `files`. Nothing on disk changes unless all were staged.
    """
    staged: list[tuple[Path, Path]] = []
    digests: dict[str, str] = {}
    try:
        for name, make_chunks in files:
            tmp, digests[name] = _stage(directory / name, make_chunks())
            staged.append((tmp, directory / name))
        if last is not None:
            name, make_last = last
            tmp, _ = _stage(directory / name, make_last(dict(digests)))
            staged.append((tmp, directory / name))
    except BaseException:
        for tmp, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise
    _commit(staged)
    return digests


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically: a reader sees the old file or the new, never half.
    A missing parent directory is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, _ = _stage(path, [text.encode("utf-8")])
    _commit([(tmp, path)])
    return path


def _json_bytes(obj: Any) -> Iterator[bytes]:
    yield (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            sha.update(block)
    return "sha256:" + sha.hexdigest()


# ------------------------------------------------------------------------------------------
# safetensors, by hand.
def _header(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None) -> bytes:
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, a in tensors.items():
        header[name] = {
            "dtype": NP_TO_ST[a.dtype.newbyteorder("=")],
            "shape": list(a.shape),
            "data_offsets": [offset, offset + a.nbytes],
        }
        offset += a.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # pad so the data section starts 8-byte aligned
    return struct.pack("<Q", len(raw)) + raw


def _tensor_bytes(a: np.ndarray) -> bytes:
    """The little-endian bytes of `a` in C order."""
    return np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()


def _safetensors_chunks(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None) -> Iterator[bytes]:
    yield _header(tensors, metadata)
    for a in tensors.values():
        yield _tensor_bytes(a)


def _check_write_tensors(tensors: Mapping[str, Any]) -> dict[str, np.ndarray]:
    out = {}
    for name, a in tensors.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise ValueError(f"tensor names must be non-empty strings other than __metadata__, got {name!r}")
        if not isinstance(a, np.ndarray):
            raise TypeError(f"tensor {name!r} is a {type(a).__name__}, not a numpy array")
        if a.dtype.newbyteorder("=") not in NP_TO_ST:
            raise TypeError(f"tensor {name!r} has dtype {a.dtype}; allowed: {sorted(map(str, NP_TO_ST))}")
        out[name] = a
    return out


def write_safetensors(
    path: str | os.PathLike,
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, str] | None = None,
) -> str:
    """Write `tensors` to a safetensors file atomically; returns its ``"sha256:..."`` digest."""
    path = Path(path)
    tensors = _check_write_tensors(tensors)
    if metadata is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ValueError(f"metadata must map str to str, got {metadata!r}")
    files = [(path.name, lambda: _safetensors_chunks(tensors, metadata))]
    return _save_files(path.parent, files)[path.name]


def _parse_header(path: Path, f: Any, size: int) -> tuple[dict[str, dict], dict[str, str], int]:
    """Validate a safetensors header; returns (entries, metadata, start of the data section)."""
    if size < 8:
        raise CheckpointError(f"{path}: truncated: {size} bytes, not even the 8-byte header length")
    (n,) = struct.unpack("<Q", f.read(8))
    if n > MAX_HEADER_BYTES:
        raise CheckpointError(f"{path}: corrupt: header length {n} is over {MAX_HEADER_BYTES} bytes")
    if 8 + n > size:
        raise CheckpointError(f"{path}: truncated: the header needs {n} bytes, the file has {size - 8}")
    try:
        header = json.loads(f.read(n).decode("utf-8"))
    except (ValueError, RecursionError) as e:  # bad UTF-8/JSON, an over-long integer, deep nesting
        raise CheckpointError(f"{path}: corrupt: the header is not UTF-8 JSON ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt: the header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{path}: corrupt: __metadata__ must map str to str, got {metadata!r}")
    data_size = size - 8 - n
    for name, e in header.items():
        where = f"{path}: tensor {name!r}"
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            raise CheckpointError(f"{where}: corrupt entry {e!r}; needs dtype, shape, data_offsets")
        dtype, shape, offsets = e["dtype"], e["shape"], e["data_offsets"]
        if dtype not in ST_DTYPES:
            raise CheckpointError(f"{where}: unknown dtype {dtype!r}; allowed: {sorted(ST_DTYPES)}")
        if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
            raise CheckpointError(f"{where}: corrupt shape {shape!r}")
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1]
        ):
            raise CheckpointError(f"{where}: corrupt data_offsets {offsets!r}")
        need = math.prod(shape) * np.dtype(ST_DTYPES[dtype]).itemsize
        if offsets[1] - offsets[0] != need:
            raise CheckpointError(
                f"{where}: corrupt: {dtype} {tuple(shape)} needs {need} bytes, "
                f"data_offsets {offsets} give {offsets[1] - offsets[0]}"
            )
        if offsets[1] > data_size:
            raise CheckpointError(
                f"{where}: truncated: its data ends at byte {offsets[1]} of the data section, "
                f"which has only {data_size} bytes"
            )
    # The data section must be covered exactly once: no overlaps, no holes, no trailing bytes.
    end = 0
    for name, e in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"]):
        a, b = e["data_offsets"]
        if a != end:
            kind = "overlaps the previous tensor" if a < end else f"leaves a hole at bytes {end}..{a}"
            raise CheckpointError(f"{path}: tensor {name!r}: corrupt: its data {kind}")
        end = b
    if end != data_size:
        raise CheckpointError(f"{path}: corrupt: {data_size - end} bytes after the last tensor belong to no tensor")
    return header, metadata, 8 + n


def read_safetensors(
    path: str | os.PathLike,
    dtypes: Container[str] | None = None,
    skip: Callable[[str], bool] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, str]]:
    """Read a safetensors file, validating its structure.

    Parameters
    ----------
    path : path-like
        The file.
    dtypes : container of str, optional
        Stored dtypes allowed (e.g. ``{"F32"}``); another raises `CheckpointError` naming it.
    skip : callable, optional
        ``skip(name)`` true: the tensor's data is not read (its entry is still validated).

    Returns
    -------
    tensors : dict
        name -> array (native byte order). F16 stays float16; BF16 is widened to float32 exactly.
    dtypes : dict
        name -> the stored safetensors dtype.
    metadata : dict
        The ``__metadata__`` strings.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    tensors, stored = {}, {}
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        header, metadata, data_start = _parse_header(path, f, size)
        for name, e in header.items():
            if skip is not None and skip(name):
                continue
            dtype = e["dtype"]
            if dtypes is not None and dtype not in dtypes:
                raise CheckpointError(f"{path}: tensor {name!r} is stored as {dtype}; allowed: {sorted(dtypes)}")
            count = math.prod(e["shape"])
            f.seek(data_start + e["data_offsets"][0])
            a = np.fromfile(f, dtype=ST_DTYPES[dtype], count=count)
            if a.size != count:  # the file shrank while we read it
                raise CheckpointError(f"{path}: tensor {name!r}: truncated while reading")
            if dtype == "BF16":  # bfloat16 is the top half of a float32
                a = (a.astype(np.uint32) << 16).view(np.float32)
            tensors[name] = a.astype(a.dtype.newbyteorder("="), copy=False).reshape(e["shape"])
            stored[name] = dtype
    return tensors, stored, metadata


# ------------------------------------------------------------------------------------------
# Checks shared by save and load.
def _model_params(model: Any, what: str, allow_kinds: bool = False) -> tuple[GPTConfig, dict[str, Any]]:
    """Dense float32 copies of `model`'s parameters, in `param_shapes` order, all checked
    (weight kinds pass through unchanged when `allow_kinds`)."""
    from .nn.gpt import param_shapes

    config = getattr(model, "config", None)
    params = getattr(model, "params", None)
    if not isinstance(config, GPTConfig) or not isinstance(params, dict):
        raise TypeError(f"model must be a minillm GPT (with .config and .params), got {type(model).__name__}")
    expected = param_shapes(config)
    missing = [n for n in expected if n not in params]
    extra = [n for n in params if n not in expected]
    if missing or extra:
        raise ValueError(f"{what}: model.params does not match model.config: missing {missing[:5]}, extra {extra[:5]}")
    out = {}
    for name, shape in expected.items():
        w = params[name]
        if is_kind(w) and allow_kinds:
            if tuple(w.shape) != shape:
                raise ValueError(f"{what}: params[{name!r}] has shape {w.shape}, the config implies {shape}")
            out[name] = w  # a weight kind: stored by _kind_tensors
            continue
        if not isinstance(w, np.ndarray):
            raise TypeError(
                f"{what}: params[{name!r}] is a {type(w).__name__}, not a numpy array; this format "
                "stores dense float32 weights only (dequantize compressed weights first: minillm.kinds.as_dense)"
            )
        if w.dtype.kind != "f":
            raise TypeError(f"{what}: params[{name!r}] has dtype {w.dtype}; allowed: a float dtype")
        if w.shape != shape:
            raise ValueError(f"{what}: params[{name!r}] has shape {w.shape}, the config implies {shape}")
        w = np.ascontiguousarray(w, dtype=np.float32)
        _check_finite(w, f"{what}: params[{name!r}]", ValueError)
        out[name] = w
    return config, out


def _check_finite(a: np.ndarray, where: str, error: type[Exception] = CheckpointError) -> None:
    bad = ~np.isfinite(a)
    if bad.any():
        first = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), a.shape))
        raise error(
            f"{where} holds {int(bad.sum())} non-finite value(s) (NaN or inf), the first {a[first]} at index {first}"
        )


def _check_tensors(
    tensors: dict[str, np.ndarray], config: GPTConfig, path: Path, config_path: Path, kinds: Container[str] = ()
) -> dict[str, np.ndarray]:
    """The tensors of `path` in `param_shapes(config)` order; CheckpointError naming a bad one.

    Names in `kinds` are stored as weight kinds, so they are not expected among the dense tensors."""
    from .nn.gpt import param_shapes

    expected = {n: s for n, s in param_shapes(config).items() if n not in kinds}
    missing = [n for n in expected if n not in tensors]
    extra = sorted(n for n in tensors if n not in expected)
    shape_of = (
        f"n_layer={config.n_layer}, n_embd={config.n_embd}, "
        f"vocab_size={config.vocab_size}, block_size={config.block_size}"
    )
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise CheckpointError(
            f"{path}: missing tensor(s) {missing[:5]}{more} that {config_path.name} ({shape_of}) requires"
        )
    if extra:
        more = f" (and {len(extra) - 5} more)" if len(extra) > 5 else ""
        raise CheckpointError(f"{path}: unexpected tensor(s) {extra[:5]}{more} for {config_path.name} ({shape_of})")
    out = {}
    for name, shape in expected.items():
        a = tensors[name]
        if a.shape != shape:
            raise CheckpointError(
                f"{path}: tensor {name!r} has shape {a.shape}, but {config_path} ({shape_of}) implies {shape}"
            )
        _check_finite(a, f"{path}: tensor {name!r}")
        out[name] = a
    return out


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; {what}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as e:  # bad UTF-8/JSON, an over-long integer, deep nesting
        raise CheckpointError(f"{path}: corrupt: not UTF-8 JSON ({e})") from None


# ------------------------------------------------------------------------------------------
# minillm checkpoints
def save(model: GPT, path: str | os.PathLike) -> Path:
    """Save `model` (a `minillm.GPT`) as a checkpoint directory, atomically.

    Writes ``model.safetensors`` (F32 parameters), ``tokenizer.json`` (if ``model.tokenizer``
    is set) and ``config.json`` (the config, a format version and each file's SHA-256).

    Parameters
    ----------
    model : GPT
        Dense float32 parameters (other float dtypes are cast to float32); all finite.
    path : path-like
        The directory; created if needed.

    Returns
    -------
    Path
        The directory.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or path-like, got {type(path).__name__}")
    directory = Path(path)
    config, params = _model_params(model, "save", allow_kinds=True)
    params, kinds = _kind_tensors(params)
    tok = getattr(model, "tokenizer", None)
    tok_json = tokenizer_to_json(tok) if tok is not None else None
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"path {str(directory)!r} exists and is not a directory")
    directory.mkdir(parents=True, exist_ok=True)

    files: list[tuple[str, Callable[[], Iterable[bytes]]]] = [
        (WEIGHTS_FILE, lambda: _safetensors_chunks(params, {"format": "minillm"}))
    ]
    if tok_json is not None:
        files.append((TOKENIZER_FILE, lambda: _json_bytes(tok_json)))

    # config.json, which records the other files' hashes, is staged and renamed last.
    def make_config(digests: dict[str, str]) -> Iterable[bytes]:
        meta = {"minillm_format_version": FORMAT_VERSION, "config": config.to_dict(), "files": digests}
        if kinds:
            meta["kinds"] = kinds
        return _json_bytes(meta)

    _save_files(directory, files, last=(CONFIG_FILE, make_config))
    if tok_json is None:  # a tokenizer.json from an earlier save no longer belongs here
        with contextlib.suppress(FileNotFoundError):
            (directory / TOKENIZER_FILE).unlink()
    return directory


def _resolve(path_or_name: Any) -> Path:
    if isinstance(path_or_name, str) and path_or_name in SHIPPED_MODELS:
        directory = WEIGHTS_DIR / path_or_name
        if not (directory / CONFIG_FILE).is_file():
            present = [n for n in SHIPPED_MODELS if (WEIGHTS_DIR / n / CONFIG_FILE).is_file()]
            raise FileNotFoundError(
                f"the shipped model {path_or_name!r} is not in this installation ({directory}); "
                f"shipped models present: {present or 'none'} (of the names {list(SHIPPED_MODELS)})"
            )
        return directory
    if not isinstance(path_or_name, (str, os.PathLike)):
        raise TypeError(
            f"path_or_name must be a directory path or one of {list(SHIPPED_MODELS)}, got {type(path_or_name).__name__}"
        )
    directory = Path(path_or_name)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"no checkpoint directory {str(directory)!r}; pass a directory written by "
            f"minillm.save or a shipped model name, one of {list(SHIPPED_MODELS)}"
        )
    return directory


def load(path_or_name: str | os.PathLike) -> GPT:
    """Load a checkpoint written by `save`, or a shipped model by name.

    Parameters
    ----------
    path_or_name : path-like or str
        A checkpoint directory, or ``"teacher"``, ``"student-scratch"``, ``"student-distilled"``
        (shipped inside the package; a plain string with one of these names always means the
        shipped model: write ``"./teacher"`` for a local directory of that name).

    Returns
    -------
    GPT
        With ``.tokenizer`` set when the checkpoint holds one.

    Raises
    ------
    CheckpointError
        A file is missing, truncated, corrupt, or does not match config.json (naming the file
        and the tensor).
    """
    from .nn.gpt import GPT

    directory = _resolve(path_or_name)
    config_path = directory / CONFIG_FILE
    if not config_path.is_file() and (directory / "pytorch_model.bin").is_file():
        raise CheckpointError(
            f"{directory}: a PyTorch pickle directory, not a minillm checkpoint; "
            "minillm never unpickles (see minillm.load_gpt2)"
        )
    meta = _read_json(config_path, "a minillm checkpoint holds config.json + model.safetensors")
    if not isinstance(meta, dict) or "minillm_format_version" not in meta:
        hint = (
            " It is a Hugging Face GPT-2 config: use minillm.load_gpt2."
            if isinstance(meta, dict) and meta.get("model_type") == "gpt2"
            else ""
        )
        raise CheckpointError(f"{config_path}: not a minillm checkpoint config (no minillm_format_version).{hint}")
    if meta["minillm_format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{config_path}: minillm_format_version {meta['minillm_format_version']!r} is not "
            f"supported; allowed: {FORMAT_VERSION}"
        )
    if not {"minillm_format_version", "config", "files"} <= set(meta) <= {"minillm_format_version", "config",
                                                                          "files", "kinds"} or not isinstance(
            meta["files"], dict):  # fmt: skip
        raise CheckpointError(
            f"{config_path}: corrupt: keys must be minillm_format_version, config, "
            f"files (a JSON object); got {sorted(meta)}"
        )
    try:
        config = GPTConfig.from_dict(meta["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{config_path}: bad config: {e}") from None
    files = meta["files"]
    unknown = set(files) - {WEIGHTS_FILE, TOKENIZER_FILE}
    if WEIGHTS_FILE not in files or unknown:
        raise CheckpointError(
            f"{config_path}: corrupt: 'files' must list {WEIGHTS_FILE} "
            f"(and optionally {TOKENIZER_FILE}), got {sorted(files)}"
        )
    for name, digest in files.items():
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing, but {config_path.name} lists it")
        if _file_sha256(path) != digest:
            raise CheckpointError(
                f"{path}: its SHA-256 differs from the one {config_path.name} records: the file "
                "was changed, or comes from a different save (an interrupted one?); save again"
            )
    weights_path = directory / WEIGHTS_FILE
    kinds_meta = meta.get("kinds", {})
    tensors, _, _ = read_safetensors(weights_path, dtypes={"F32"} if not kinds_meta else {"F32", "F16", "I8", "U8"})
    tensors, kinds = _kinds_from_tensors(tensors, kinds_meta, config, weights_path, config_path)
    from .nn.gpt import output_major

    params = output_major(_check_tensors(tensors, config, weights_path, config_path, kinds)) | kinds
    params = {name: params[name] for name in param_shapes_of(config)}  # the usual order
    tok = None
    if TOKENIZER_FILE in files:
        tok_path = directory / TOKENIZER_FILE
        try:
            tok = tokenizer_from_json(_read_json(tok_path, "config.json lists it"))
        except (TypeError, ValueError) as e:
            if isinstance(e, CheckpointError):
                raise
            raise CheckpointError(f"{tok_path}: bad tokenizer: {e}") from None
        _check_tokenizer_fits(tok, config, tok_path)
    return GPT(config, params=params, tokenizer=tok)


def _check_tokenizer_fits(tok: Any, config: GPTConfig, path: Path) -> None:
    if tok.vocab_size > config.vocab_size:
        raise CheckpointError(
            f"{path}: the tokenizer has {tok.vocab_size} ids but the model's vocab_size is "
            f"{config.vocab_size}: some ids would have no embedding"
        )


def param_shapes_of(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    from .nn.gpt import param_shapes

    return param_shapes(config)


# Compressed weights: each kind's arrays are stored as tensors "NAME::FIELD" and its class and
# integer attributes in config.json under "kinds", so a compressed model loads back as it was.
# A kind held inside a kind (a TiedEmbedding's head) is stored the same way one level down:
# tensors "NAME::head::FIELD" and its spec under "fields".
def _kind_tensors(params: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    tensors: dict[str, np.ndarray] = {}
    kinds: dict[str, dict[str, Any]] = {}
    for name, w in params.items():
        if is_kind(w):
            kinds[name] = _store_kind(name, w, tensors)
        else:
            tensors[name] = w
    return tensors, kinds


def _store_kind(prefix: str, w: Any, tensors: dict[str, np.ndarray]) -> dict[str, Any]:
    """Put `w`'s arrays into `tensors` under "prefix::field"; return its JSON spec."""
    attrs: dict[str, Any] = {}
    inner: dict[str, Any] = {}
    for f in dataclasses.fields(w):
        v = getattr(w, f.name)
        if isinstance(v, np.ndarray):
            tensors[f"{prefix}::{f.name}"] = np.ascontiguousarray(v)
        elif is_kind(v):
            inner[f.name] = _store_kind(f"{prefix}::{f.name}", v, tensors)
        elif v is None or isinstance(v, (int, float, str, bool)):
            attrs[f.name] = v
        else:
            raise TypeError(f"save: {prefix}: field {f.name} of {type(w).__name__} cannot be stored")
    spec: dict[str, Any] = {"kind": type(w).__name__, "attrs": attrs}
    if inner:
        spec["fields"] = inner
    return spec


def _kinds_from_tensors(tensors: dict[str, np.ndarray], kinds_meta: Any, config: GPTConfig, path: Path,
                        config_path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:  # fmt: skip
    """Rebuild the weight kinds listed in config.json; returns (dense tensors, kinds by name)."""
    if not isinstance(kinds_meta, dict):
        raise CheckpointError(f"{config_path}: corrupt: 'kinds' must be a JSON object")
    expected = param_shapes_of(config)
    rest = {k: v for k, v in tensors.items() if "::" not in k}
    used: set[str] = set()
    out: dict[str, Any] = {}
    for name, spec in kinds_meta.items():
        if name not in expected:
            raise CheckpointError(f"{config_path}: bad 'kinds' entry {name!r}: not a parameter of this config")
        w = _build_kind(name, spec, tensors, used, path, config_path)
        if tuple(w.shape) != expected[name]:
            raise CheckpointError(f"{path}: {name!r} has shape {w.shape}, but {config_path.name} implies "
                                  f"{expected[name]}")  # fmt: skip
        out[name] = w
    stray = sorted({k.rsplit("::", 1)[0] for k in tensors if "::" in k and k not in used})
    if stray:
        raise CheckpointError(f"{path}: tensor(s) for {stray[:5]} belong to no entry of {config_path.name}'s kinds")
    for name, v in rest.items():
        if v.dtype != np.float32:
            raise CheckpointError(f"{path}: tensor {name!r} has dtype {v.dtype}; allowed: float32")
    return rest, out


def _build_kind(prefix: str, spec: Any, tensors: dict[str, np.ndarray], used: set[str], path: Path,
                config_path: Path) -> Any:  # fmt: skip
    """The kind described by `spec`, from the tensors "prefix::field" (recording them in `used`)."""
    from . import kinds as kinds_mod

    allowed = list(kinds_mod.KIND_CLASSES)
    if not isinstance(spec, dict) or spec.get("kind") not in allowed:
        raise CheckpointError(f"{config_path}: bad 'kinds' entry {prefix!r}: {spec!r}; kinds allowed: {allowed}")
    cls = getattr(kinds_mod, spec["kind"])
    fields = {f.name for f in dataclasses.fields(cls)}
    arrays = {k[len(prefix) + 2 :]: v for k, v in tensors.items()
              if k.startswith(prefix + "::") and "::" not in k[len(prefix) + 2 :]}  # fmt: skip
    attrs, inner_specs = spec.get("attrs", {}), spec.get("fields", {})
    if not isinstance(attrs, dict) or not isinstance(inner_specs, dict):
        raise CheckpointError(f"{config_path}: 'kinds' entry {prefix!r}: attrs and fields must be JSON objects, "
                              f"got {attrs!r} and {inner_specs!r}")  # fmt: skip
    found = set(arrays) | set(attrs) | set(inner_specs)
    if found != fields or len(found) != len(arrays) + len(attrs) + len(inner_specs):
        raise CheckpointError(f"{path}: tensor(s) of {prefix!r} ({spec['kind']}) do not match its fields "
                              f"{sorted(fields)}: found {sorted(found)}")  # fmt: skip
    inner = {f: _build_kind(f"{prefix}::{f}", s, tensors, used, path, config_path) for f, s in inner_specs.items()}
    try:
        w = cls(**arrays, **attrs, **inner)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: tensor(s) of {prefix!r} do not form a valid {spec['kind']}: {e}") from None
    used.update(f"{prefix}::{f}" for f in arrays)
    return w


# ------------------------------------------------------------------------------------------
# Hugging Face GPT-2 directories
HF_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers of old files


def _config_from_hf(cfg: Any, path: Path) -> GPTConfig:
    """GPTConfig from a transformers GPT2Config dict, refusing options our forward lacks."""
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: corrupt: must hold a JSON object")
    if cfg.get("model_type", "gpt2") != "gpt2":
        raise CheckpointError(f"{path}: model_type {cfg['model_type']!r} is not supported; allowed: 'gpt2'")
    if "n_positions" not in cfg and "n_ctx" in cfg:  # the oldest configs name it n_ctx only
        cfg = {**cfg, "n_positions": cfg["n_ctx"]}
    need = ("vocab_size", "n_positions", "n_layer", "n_head", "n_embd")
    missing = [k for k in need if k not in cfg]
    if missing:
        raise CheckpointError(f"{path}: missing GPT-2 config field(s) {missing}")
    C = cfg["n_embd"]
    unsupported = {
        "activation_function": (
            cfg.get("activation_function", "gelu_new"),
            ("gelu_new", "gelu_pytorch_tanh"),
        ),
        "n_inner": (cfg.get("n_inner"), (None, 4 * C if isinstance(C, int) else None)),
        "scale_attn_weights": (cfg.get("scale_attn_weights", True), (True,)),
        "scale_attn_by_inverse_layer_idx": (
            cfg.get("scale_attn_by_inverse_layer_idx", False),
            (False,),
        ),
        "add_cross_attention": (cfg.get("add_cross_attention", False), (False,)),
        "tie_word_embeddings": (cfg.get("tie_word_embeddings", True), (True,)),
    }
    for key, (value, allowed) in unsupported.items():
        if value not in allowed:
            raise CheckpointError(
                f"{path}: {key}={value!r} is not supported by minillm's GPT-2; allowed: {list(allowed)}"
            )
    try:
        return GPTConfig(
            vocab_size=cfg["vocab_size"],
            block_size=cfg["n_positions"],
            n_layer=cfg["n_layer"],
            n_head=cfg["n_head"],
            n_embd=C,
            layer_norm_epsilon=cfg.get("layer_norm_epsilon", 1e-5),
        )
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: {e}") from None


def _read_hf_tokenizer(directory: Path) -> Any:
    if (directory / "vocab.json").is_file() or (directory / "merges.txt").is_file():
        try:
            return GPT2Tokenizer.from_directory(directory)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{directory}: bad GPT-2 tokenizer files: {e}") from None
    if (directory / "tokenizer.json").is_file():
        return _read_hf_tokenizer_json(directory / "tokenizer.json")
    if (directory / HF_MINILLM_TOKENIZER).is_file():
        path = directory / HF_MINILLM_TOKENIZER
        try:
            return tokenizer_from_json(_read_json(path, ""))
        except CheckpointError:
            raise
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: bad tokenizer: {e}") from None
    return None


def _read_hf_tokenizer_json(path: Path) -> GPT2Tokenizer | None:
    """A GPT2Tokenizer from a Hugging Face ``tokenizer.json`` holding GPT-2's byte-level BPE.

    Anything else (another model type, a normalizer, ``add_prefix_space``) is not GPT-2's
    tokenizer: the model then loads without one, with a warning saying why.
    """
    d = _read_json(path, "")
    if not isinstance(d, dict):
        raise CheckpointError(f"{path}: corrupt: must hold a JSON object")
    model, pre = d.get("model"), d.get("pre_tokenizer")
    why = None
    if not (isinstance(model, dict) and model.get("type") == "BPE"):
        why = "its model is not BPE"
    elif not (isinstance(pre, dict) and pre.get("type") == "ByteLevel"):
        why = "its pre_tokenizer is not ByteLevel"
    elif pre.get("add_prefix_space") or pre.get("use_regex") is False or d.get("normalizer"):
        why = "it sets add_prefix_space, use_regex=false or a normalizer"
    elif model.get("continuing_subword_prefix") or model.get("end_of_word_suffix") or model.get("dropout"):
        why = "its BPE uses a subword prefix/suffix or dropout"
    if why is not None:
        warnings.warn(f"{path}: not GPT-2's byte-level BPE ({why}); the model loads without a tokenizer", stacklevel=3)
        return None
    merges = []
    for r, m in enumerate(model.get("merges", [])):
        pair = m.split(" ") if isinstance(m, str) else m  # older files: "a b"; newer: ["a", "b"]
        if not (isinstance(pair, list) and len(pair) == 2):
            raise CheckpointError(f"{path}: model.merges[{r}] = {m!r} is not a pair")
        merges.append(tuple(pair))
    vocab = dict(model.get("vocab", {}))
    specials = []
    for t in d.get("added_tokens", []):
        if isinstance(t, dict) and t.get("special"):
            vocab.setdefault(t.get("content"), t.get("id"))
            specials.append(t.get("content"))
    try:
        return GPT2Tokenizer(vocab, merges, special_tokens=specials)
    except ValueError as e:
        raise CheckpointError(f"{path}: bad byte-level BPE tokenizer: {e}") from None


def load_gpt2(directory: str | os.PathLike) -> GPT:
    """Load a Hugging Face GPT-2 directory (``config.json`` + ``model.safetensors``).

    Accepts what ``transformers.GPT2LMHeadModel.save_pretrained`` writes, names with or without
    the ``transformer.`` prefix, a tied ``lm_head.weight`` (it must equal ``wte.weight``) or none,
    and ignores the ``attn.bias`` / ``attn.masked_bias`` mask buffers of old files. F16 and BF16
    weights are widened to float32 exactly. A tokenizer (``vocab.json`` + ``merges.txt``, a
    byte-level BPE ``tokenizer.json``, or minillm's own ``minillm_tokenizer.json``) is attached.
    A directory holding only ``pytorch_model.bin`` is refused: minillm never unpickles.
    """
    from .nn.gpt import GPT

    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"directory must be a str or path-like, got {type(directory).__name__}")
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"no such directory: {str(directory)!r}; allowed: a Hugging Face GPT-2 directory "
            "(config.json + model.safetensors)"
        )
    config_path = directory / CONFIG_FILE
    config = _config_from_hf(_read_json(config_path, "a GPT-2 directory holds config.json"), config_path)
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        if (directory / "model.safetensors.index.json").is_file():
            raise CheckpointError(f"{directory}: sharded safetensors checkpoints are not supported")
        pickles = sorted(p.name for p in directory.iterdir() if p.suffix in (".bin", ".pt", ".pth"))
        if pickles:
            raise CheckpointError(
                f"{directory}: holds only {pickles}, PyTorch pickle files; minillm never unpickles "
                "(loading a pickle can run arbitrary code). Convert it once with transformers: "
                "GPT2LMHeadModel.from_pretrained(d).save_pretrained(d, safe_serialization=True)"
            )
        raise CheckpointError(f"{weights_path}: missing")

    raw, _, _ = read_safetensors(
        weights_path, dtypes={"F32", "F16", "BF16"}, skip=lambda n: n.endswith(HF_IGNORED_SUFFIXES)
    )
    tensors: dict[str, np.ndarray] = {}
    for name, a in raw.items():
        short = name.removeprefix("transformer.")
        if short in tensors:
            raise CheckpointError(
                f"{weights_path}: tensor {short!r} appears with and without the 'transformer.' prefix"
            )
        tensors[short] = a.astype(np.float32, copy=False)
    head = tensors.pop("lm_head.weight", None)
    if head is not None and "wte.weight" in tensors and not np.array_equal(head, tensors["wte.weight"]):
        raise CheckpointError(
            f"{weights_path}: tensor 'lm_head.weight' differs from 'wte.weight'; minillm's GPT-2 "
            "ties the LM head to the token embedding"
        )
    from .nn.gpt import output_major

    params = output_major(_check_tensors(tensors, config, weights_path, config_path))
    tok = _read_hf_tokenizer(directory)
    if tok is not None:
        _check_tokenizer_fits(tok, config, directory)
    return GPT(config, params=params, tokenizer=tok)


def _hf_config(config: GPTConfig, tok: Any) -> dict[str, Any]:
    eos = tok.encoder.get("<|endoftext|>") if isinstance(tok, GPT2Tokenizer) else None
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "activation_function": "gelu_new",
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_ctx": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None,
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "attn_pdrop": 0.1,
        "embd_pdrop": 0.1,
        "resid_pdrop": 0.1,
        "initializer_range": 0.02,
        "bos_token_id": eos,
        "eos_token_id": eos,
        "use_cache": True,
        "dtype": "float32",
    }


def save_gpt2(model: GPT, directory: str | os.PathLike) -> Path:
    """Save `model` as a Hugging Face GPT-2 directory, atomically.

    Writes ``model.safetensors`` (names ``transformer.*``; the tied LM head is omitted, as
    ``save_pretrained`` does), ``config.json`` (a ``GPT2Config``), and the tokenizer: a
    `GPT2Tokenizer` as ``vocab.json`` + ``merges.txt``; a `CharTokenizer`, which has no
    Hugging Face format, as ``minillm_tokenizer.json`` (transformers ignores it, `load_gpt2`
    reads it). Tokenizer files that an earlier save left and this one did not write
    (``vocab.json``, ``merges.txt``, ``tokenizer.json``, ``minillm_tokenizer.json``) are removed:
    they no longer describe the model's tokenizer.
    """
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"directory must be a str or path-like, got {type(directory).__name__}")
    directory = Path(directory)
    config, params = _model_params(model, "save_gpt2")
    tok = getattr(model, "tokenizer", None)
    if tok is not None and not isinstance(tok, (GPT2Tokenizer, CharTokenizer)):
        raise TypeError(f"model.tokenizer must be a GPT2Tokenizer or CharTokenizer, got {type(tok).__name__}")
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"directory {str(directory)!r} exists and is not a directory")
    directory.mkdir(parents=True, exist_ok=True)

    tensors = {"transformer." + name: w for name, w in params.items()}
    files: list[tuple[str, Callable[[], Iterable[bytes]]]] = [
        (WEIGHTS_FILE, lambda: _safetensors_chunks(tensors, {"format": "pt"}))
    ]
    if isinstance(tok, GPT2Tokenizer):
        files += [
            ("vocab.json", lambda: [tok.to_vocab_json().encode("utf-8")]),
            ("merges.txt", lambda: [tok.to_merges_txt().encode("utf-8")]),
        ]
    elif isinstance(tok, CharTokenizer):
        files.append((HF_MINILLM_TOKENIZER, lambda: _json_bytes(tokenizer_to_json(tok))))
    files.append((CONFIG_FILE, lambda: _json_bytes(_hf_config(config, tok))))
    _save_files(directory, files)
    written = {name for name, _ in files}
    for stale in ("vocab.json", "merges.txt", "tokenizer.json", HF_MINILLM_TOKENIZER):
        if stale not in written:
            with contextlib.suppress(FileNotFoundError):
                (directory / stale).unlink()
    return directory
