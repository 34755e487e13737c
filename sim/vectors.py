"""Golden vectors for your own testbench: load what ``post-accel vectors`` wrote and check a DUT against it.

This module needs numpy only (no torch, no post-accel package): copy this one file next to your cocotb
testbench if post-accel is not installed there. ``docs/vectors.md`` describes the vectors;
``docs/examples/vectors/`` is a complete cocotb example.

Example
-------
>>> vec = load_vectors("out/vectors")                      # npy, hex or json, read from manifest.json
>>> w = vec.array("layer3", "weights")                     # parameters: POST codes, mult, shift, LUT, ...
>>> x = vec.array("layer3", "in_codes")[0]                 # sample 0's input codes of layer3
>>> check = VectorChecker(vec)
>>> check.compare("layer3", got_values, sample=0)          # default array: "value"; returns mismatches
>>> check.compare("layer3", got_accs, array="acc")         # all samples at once: got shape [N, ...]
>>> check.assert_ok()                                      # AssertionError naming the first mismatch

Every mismatch is counted; the first one is kept as a :class:`Mismatch` ``(layer, array, sample, index,
expected, got)``, ``index`` being the position inside one sample's array (a tuple, C order).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = ["VECTORS_FORMAT", "VECTORS_VERSION", "VectorError", "Vectors", "Mismatch", "VectorChecker",
           "load_vectors", "compare"]

VECTORS_FORMAT = "post-accel-vectors"      #: manifest.json "format" (``post-accel vectors`` writes it)
VECTORS_VERSION = 2                        #: manifest.json "version" (2: v4 arithmetic, bias and acc_shift)


class VectorError(ValueError):
    """The vector directory is missing, damaged, or asked for an array it does not hold."""


class Vectors:
    """A vector directory: its manifest and its arrays, read lazily.

    Attributes
    ----------
    path : Path
        The directory.
    manifest : dict
        ``manifest.json``: ``samples``, ``layers`` (per-stage parameters: bit widths, shapes, quantizers,
        rescale, ...), ``arrays`` (per array: ``layer``, ``name``, ``file``, ``shape``, ``dtype``,
        ``meaning``; hex: ``width``, ``signed``).
    """

    def __init__(self, path):
        self.path = Path(path)
        mpath = self.path / "manifest.json"
        try:
            self.manifest = json.loads(mpath.read_text())
        except FileNotFoundError:
            raise VectorError(f"{mpath}: no manifest; write the vectors with `post-accel vectors`") from None
        except ValueError as exc:
            raise VectorError(f"{mpath}: not valid JSON ({exc})") from None
        if self.manifest.get("format") != VECTORS_FORMAT or self.manifest.get("version") != VECTORS_VERSION:
            raise VectorError(f"{mpath}: format {self.manifest.get('format')!r} version "
                              f"{self.manifest.get('version')!r}, expected {VECTORS_FORMAT!r} {VECTORS_VERSION}")
        self._entries = {(e["layer"], e["name"]): e for e in self.manifest["arrays"]}
        self._cache: dict = {}
        self._json: dict = {}

    @property
    def samples(self) -> int:
        return int(self.manifest["samples"])

    @property
    def layers(self) -> list[str]:
        """Stage names in execution order (arrays of the whole network are under ``"network"``)."""
        return [rec["name"] for rec in self.manifest["layers"]]

    def layer(self, name: str) -> dict:
        """The manifest record of stage ``name`` (bit widths, shapes, quantizers, rescale, ...)."""
        for rec in self.manifest["layers"]:
            if rec["name"] == name:
                return rec
        raise VectorError(f"no layer {name!r}; the vectors have {', '.join(self.layers)}")

    def names(self, layer: str) -> list[str]:
        """The arrays held for ``layer``."""
        return [n for (l, n) in self._entries if l == layer]

    def info(self, layer: str, name: str) -> dict:
        """The manifest entry of one array."""
        try:
            return self._entries[(layer, name)]
        except KeyError:
            have = ", ".join(self.names(layer)) or f"nothing (layers: network, {', '.join(self.layers)})"
            raise VectorError(f"no array {name!r} for layer {layer!r}; it has {have}") from None

    def array(self, layer: str, name: str) -> np.ndarray:
        """One array as int64, shaped as the manifest says (``[N, ...]`` for per-sample arrays)."""
        key = (layer, name)
        if key not in self._cache:
            self._cache[key] = self._read(self.info(layer, name))
        return self._cache[key]

    def _read(self, e: dict) -> np.ndarray:
        f = self.path / e["file"]
        shape = tuple(e["shape"])
        try:
            if f.suffix == ".npy":
                a = np.load(f, allow_pickle=False)
            elif f.suffix == ".hex":
                a = _read_hex(f, int(e["width"]), bool(e["signed"]))
            elif f.suffix == ".json":
                if f not in self._json:
                    self._json[f] = json.loads(f.read_text())
                a = np.asarray(self._json[f]["arrays"][e["key"]]["data"], dtype=np.int64)
            else:
                raise VectorError(f"{f}: unknown file type {f.suffix!r}")
        except (OSError, ValueError, KeyError) as exc:
            if isinstance(exc, VectorError):
                raise
            raise VectorError(f"{f}: cannot read {e['layer']}/{e['name']} ({type(exc).__name__}: {exc})") from None
        if a.size != int(np.prod(shape, dtype=np.int64)):
            raise VectorError(f"{f}: {a.size} values, the manifest says shape {list(shape)}")
        return a.astype(np.int64).reshape(shape)


def _read_hex(path: Path, width: int, signed: bool) -> np.ndarray:
    """A ``$readmemh`` file: one hex value a line (``//`` comments and blank lines skipped)."""
    vals = []
    for line in path.read_text().splitlines():
        text = line.split("//", 1)[0].strip()
        if text:
            v = int(text, 16)
            if v >> width:
                raise ValueError(f"value {text} does not fit the manifest's {width} bits")
            if signed and v >> (width - 1):
                v -= 1 << width
            vals.append(v)
    return np.asarray(vals, dtype=np.int64)


def load_vectors(path) -> Vectors:
    """Open a directory written by ``post-accel vectors`` (any of its formats: npy, hex, json)."""
    return Vectors(path)


class Mismatch(NamedTuple):
    """The first difference: ``sample`` is None for parameter arrays; ``index`` is inside one sample."""

    layer: str
    array: str
    sample: int | None
    index: tuple
    expected: int
    got: int

    def __str__(self) -> str:
        where = "" if self.sample is None else f" sample {self.sample}"
        return (f"{self.layer}/{self.array}{where} index {list(self.index)}: expected {self.expected}, "
                f"got {self.got}")


class VectorChecker:
    """Compares a DUT's outputs with the vectors; counts every mismatch and keeps the first.

    Attributes
    ----------
    mismatches : int
        Values that differed, over every :meth:`compare` call.
    checked : int
        Values compared.
    first : Mismatch or None
        The first difference seen.
    """

    def __init__(self, vectors: Vectors | str | Path):
        self.vectors = vectors if isinstance(vectors, Vectors) else load_vectors(vectors)
        self.mismatches = 0
        self.checked = 0
        self.first: Mismatch | None = None

    @property
    def ok(self) -> bool:
        return self.mismatches == 0

    def compare(self, layer: str, got, *, array: str = "value", sample: int | None = None,
                index: tuple | None = None) -> int:
        """Compare ``got`` with the expected ``array`` of ``layer``; return how many values differ.

        ``sample=None``: ``got`` is the whole array (``[N, ...]`` for per-sample arrays); ``sample=s``:
        ``got`` is sample ``s``'s part. ``index`` (a tuple, inside the sample) narrows it further,
        e.g. ``index=(o,)`` for one output channel of a layer whose value is ``[N, O]``.
        """
        exp = self.vectors.array(layer, array)
        per_sample = bool(self.vectors.info(layer, array)["per_sample"])
        prefix = ()
        if sample is not None:
            if not per_sample:
                raise VectorError(f"{layer}/{array} is a parameter, not per sample; compare it with sample=None")
            if not 0 <= sample < exp.shape[0]:
                raise VectorError(f"sample {sample} outside 0..{exp.shape[0] - 1}")
            exp, prefix = exp[sample], (sample,)
        if index is not None:
            exp = exp[tuple(index)]
            prefix = prefix + tuple(index)
        got = np.asarray(got)
        exp = np.asarray(exp)
        if got.shape != exp.shape:
            raise VectorError(f"{layer}/{array}: got shape {list(got.shape)}, expected {list(exp.shape)}")
        diff = np.argwhere(got.astype(np.int64) != exp)
        self.checked += int(exp.size)
        self.mismatches += len(diff)
        if len(diff) and self.first is None:
            pos = prefix + tuple(int(i) for i in diff[0])
            s, inner = (pos[0], pos[1:]) if per_sample else (None, pos)
            self.first = Mismatch(layer, array, s, inner, int(exp[tuple(diff[0])]), int(got[tuple(diff[0])]))
        return len(diff)

    def summary(self) -> str:
        if self.ok:
            return f"{self.checked} values checked, 0 mismatches"
        return f"{self.mismatches} of {self.checked} values mismatch; first: {self.first}"

    def assert_ok(self) -> None:
        """Raise ``AssertionError`` with :meth:`summary` if any value differed."""
        if not self.ok:
            raise AssertionError(self.summary())


def compare(vectors: Vectors | str | Path, layer: str, got, **kwargs) -> Mismatch | None:
    """One-shot :meth:`VectorChecker.compare`: the first mismatch, or None if ``got`` equals the vectors."""
    checker = VectorChecker(vectors)
    checker.compare(layer, got, **kwargs)
    return checker.first
