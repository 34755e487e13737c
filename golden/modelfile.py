"""The container of an exported model file and its format tag (``docs/export.md``).

An exported model is one safetensors file whose ``__metadata__["post_accel"]`` entry is a JSON header
starting with a format tag: ``"format": "post-accel-intgraph"`` and ``"version": 4`` (the integer
DAG of :mod:`golden.intdag` in the hardware-sized arithmetic, the one format; :mod:`golden.graphfile` reads and writes it). Loading
dispatches on that tag (:func:`check_format_tag`), never on the text of an error. Files of earlier
generations -- the version-1 MLP file (``"post-accel-intmodel"``) and the version-2 chain graph --
are refused with one line naming the command that re-exports them (:class:`OldModelFileError`).

NumPy and ``safetensors.numpy`` only (no torch).
"""

from __future__ import annotations

import math
import os

import numpy as np

from . import arith
from .errors import InputError

__all__ = ["METADATA_KEY", "MODEL_FORMAT", "MODEL_VERSION", "MODEL_FORMAT_NAME", "REEXPORT", "ModelFileError",
           "OldModelFileError", "read_model_file", "check_format_tag"]

METADATA_KEY = "post_accel"
MODEL_FORMAT = "post-accel-intgraph"      #: the format tag of every exported model
MODEL_VERSION = 4                         #: its version (the integer DAG, hardware-sized arithmetic)
MODEL_FORMAT_NAME = f"{MODEL_FORMAT} v{MODEL_VERSION}"
#: How to make a file of the current format from a training checkpoint.
REEXPORT = "re-export it from its training checkpoint: `post-accel export CHECKPOINT`"
_FIX = "re-export the model (`post-accel export CHECKPOINT`)"
#: Tags of earlier generations: (format, version) -> what it was.
_OLD_FORMATS = {("post-accel-intmodel", 1): "a version-1 MLP file (format post-accel-intmodel v1)",
                (MODEL_FORMAT, 2): "a version-2 chain graph (format post-accel-intgraph v2)",
                (MODEL_FORMAT, 3): "a version-3 integer DAG of the int64 arithmetic (format post-accel-intgraph v3)"}


class ModelFileError(InputError):
    """An exported model file (or in-memory graph) violates ``docs/export.md``; one-line message."""


class OldModelFileError(ModelFileError):
    """A model file of an earlier format generation (v1 MLP file, v2 chain graph): re-export it."""


class _Checker:
    """Collects the file name for messages; every failure raises :class:`ModelFileError`."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, what: str, fix: str = _FIX):
        raise ModelFileError(f"{self.where}: {what}; {fix}")

    def int_(self, v, what: str, lo: int | None = None) -> int:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            self.fail(f"{what} must be an integer, got {v!r}")
        if lo is not None and v < lo:
            self.fail(f"{what} must be >= {lo}, got {v!r}")
        return int(v)

    def pos_float(self, v, what: str) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            self.fail(f"{what} must be a number, got {v!r}")
        if not (math.isfinite(float(v)) and float(v) > 0):
            self.fail(f"{what} must be finite and > 0, got {v!r}")
        return float(v)

    def arith_(self, fn, v, what: str) -> int:
        if isinstance(v, bool):
            self.fail(f"{what} must be an integer, got {v!r}")
        try:
            return fn(v)
        except arith.ArithError as exc:
            self.fail(f"{what}: {exc}")

    def keys(self, d, expected, what: str) -> dict:
        if not isinstance(d, dict):
            self.fail(f"{what} must be a JSON object, got {type(d).__name__}")
        missing = [k for k in expected if k not in d]
        extra = sorted(set(d) - set(expected))
        if missing:
            self.fail(f"{what} lacks field(s) {missing}")
        if extra:
            self.fail(f"{what} has unknown field(s) {extra}")
        return d


def _reject_constant(name):
    raise ValueError(f"non-finite number {name} in JSON")


def read_model_file(path) -> tuple[_Checker, dict, dict]:
    """Open an exported model file with safetensors (never pickle): ``(checker, metadata, tensors)``.

    A missing path, a directory or an unreadable (truncated, corrupt, foreign) file raises
    :class:`ModelFileError` in one line.
    """
    from safetensors import safe_open

    p = os.fspath(path)
    c = _Checker(p)
    if not os.path.exists(p):
        c.fail("no such file", "check the path, or export a model first (`post-accel export CHECKPOINT`)")
    if os.path.isdir(p):
        c.fail("is a directory, not a model file", "pass the exported .safetensors file inside it")
    if not os.path.isfile(p):                              # a FIFO would block the read forever
        c.fail("is not a regular file (a FIFO or device?)", "pass the model file itself")
    try:
        with safe_open(p, framework="numpy") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors' own errors on short/garbage files, OSError, ...
        detail = str(exc).splitlines()[0] if str(exc) else ""
        c.fail(f"not a readable safetensors file (truncated or corrupt?): {type(exc).__name__}: {detail}",
               "re-export the model; the file is damaged or not a model file")
    return c, meta, tensors


def check_format_tag(header, c: _Checker) -> None:
    """Dispatch on the header's format tag: the current format passes; an earlier generation raises
    :class:`OldModelFileError` naming the re-export command; anything else :class:`ModelFileError`."""
    if not isinstance(header, dict):
        c.fail(f"the {METADATA_KEY!r} header is a {type(header).__name__}, not a JSON object",
               "this is not a post-accel model")
    tag = (header.get("format"), header.get("version"))
    if tag in _OLD_FORMATS:
        raise OldModelFileError(f"{c.where}: {_OLD_FORMATS[tag]}, which post-accel no longer reads; {REEXPORT}")
    if tag[0] != MODEL_FORMAT:
        c.fail(f"format tag is {tag[0]!r}, expected {MODEL_FORMAT!r}", "this is not a post-accel model")
    if tag[1] != MODEL_VERSION:
        c.fail(f"version {tag[1]!r} of {MODEL_FORMAT} is not {MODEL_VERSION}", "upgrade post-accel or re-export")
