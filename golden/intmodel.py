"""A trained quantized model in integer form, and its file format (``docs/export.md``).

NumPy and ``safetensors.numpy`` only (no torch). :func:`load_intmodel` checks everything the
format promises and turns every problem -- missing file, directory, truncated or foreign file,
bad JSON, wrong type, range, dtype or shape, inconsistent layer chain -- into a
:class:`ModelFileError` with a one-line message naming the file and what to do about it.
:func:`save_intmodel` runs the same checks before writing, so it never writes a file the loader
would reject.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field

import numpy as np

from . import arith
from .errors import InputError

__all__ = ["FORMAT", "VERSION", "METADATA_KEY", "ModelFileError", "IntLayer", "IntModel",
           "requant_ratio", "bias_limit", "save_intmodel", "load_intmodel", "validate_intmodel"]

FORMAT = "post-accel-intmodel"
VERSION = 1
METADATA_KEY = "post_accel"

_FIX = "re-export the model (golden.export.export_model + save_intmodel, or `post-accel export`)"
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LAYER_KEYS = ("name", "kind", "fan_in", "fan_out", "wbits", "abits_in", "abits_out",
               "alpha", "step_in", "step_out", "mult", "shift", "final")
_TOP_KEYS = ("format", "version", "frac_bits", "input", "classes", "layers", "provenance")


class ModelFileError(InputError):
    """An integer-model file (or in-memory model) violates ``docs/export.md``; one-line message."""


def requant_ratio(step_in: float, alpha: float, frac_bits: int, step_out: float) -> float:
    """``step_in * alpha * 2**-frac_bits / step_out`` in float64 (the ratio fed to
    :func:`golden.arith.fixed_point_multiplier`; one accumulator unit in output steps)."""
    return float(step_in) * float(alpha) * 2.0 ** -int(frac_bits) / float(step_out)


def bias_limit(fan_in: int, abits_in: int, frac_bits: int) -> int:
    """Largest allowed ``|bias|``: ``fan_in * arith.max_product_magnitude(abits_in, frac_bits)``."""
    return int(fan_in) * arith.max_product_magnitude(abits_in, frac_bits)


@dataclass(kw_only=True, eq=False)
class IntLayer:
    """One integer linear layer.

    ``codes``: uint8 ``[fan_out, fan_in]`` POST codes at ``wbits``; ``bias``: int64 ``[fan_out]`` in
    accumulator units (``step_in * alpha * 2**-frac_bits``). Non-final layers carry
    ``abits_out``, ``step_out``, ``mult``, ``shift``; the final layer has them all ``None``.
    """

    name: str
    kind: str = "linear"
    codes: np.ndarray
    bias: np.ndarray
    wbits: int
    abits_in: int
    abits_out: int | None
    alpha: float
    step_in: float
    step_out: float | None
    mult: int | None
    shift: int | None
    final: bool

    @property
    def fan_in(self) -> int:
        return int(self.codes.shape[1])

    @property
    def fan_out(self) -> int:
        return int(self.codes.shape[0])

    def header(self) -> dict:
        """The layer's JSON entry (see ``docs/export.md``)."""
        return {"name": self.name, "kind": self.kind, "fan_in": self.fan_in, "fan_out": self.fan_out,
                "wbits": self.wbits, "abits_in": self.abits_in, "abits_out": self.abits_out,
                "alpha": self.alpha, "step_in": self.step_in, "step_out": self.step_out,
                "mult": self.mult, "shift": self.shift, "final": self.final}

    def __eq__(self, other) -> bool:
        if not isinstance(other, IntLayer):
            return NotImplemented
        return (self.header() == other.header()
                and self.codes.dtype == other.codes.dtype and np.array_equal(self.codes, other.codes)
                and self.bias.dtype == other.bias.dtype and np.array_equal(self.bias, other.bias))


@dataclass(kw_only=True)
class IntModel:
    """A whole integer model: input quantizer parameters, layers in order, provenance (JSON dict)."""

    frac_bits: int
    input_features: int
    input_bits: int
    input_step: float
    classes: int
    layers: list
    provenance: dict = field(default_factory=dict)

    def header(self) -> dict:
        """The ``__metadata__["post_accel"]`` JSON object."""
        return {"format": FORMAT, "version": VERSION, "frac_bits": self.frac_bits,
                "input": {"features": self.input_features, "bits": self.input_bits, "step": self.input_step},
                "classes": self.classes, "layers": [l.header() for l in self.layers],
                "provenance": self.provenance}

    def tensors(self) -> dict:
        """``{"<name>.codes": uint8, "<name>.bias": int64}`` for every layer."""
        out = {}
        for l in self.layers:
            out[f"{l.name}.codes"] = l.codes
            out[f"{l.name}.bias"] = l.bias
        return out


# --- validation --------------------------------------------------------------

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


def _check_header(h, c: _Checker) -> dict:
    """Validate the JSON header; returns a normalised copy (Python ints/floats)."""
    if isinstance(h, dict) and h.get("format") == "post-accel-intgraph":
        c.fail("is an integer graph (export v2) of a conv/zoo model, not a v1 MLP file",
               "the layer engine runs v1 MLP models so far (train with the default --model mlp "
               "--weight-quant post --act-quant lsq); use golden.graphfile.load_graph for v2 files")
    c.keys(h, _TOP_KEYS, "header")
    if h["format"] != FORMAT:
        c.fail(f"format tag is {h['format']!r}, expected {FORMAT!r}", "this is not a post-accel integer model")
    if isinstance(h["version"], bool) or h["version"] != VERSION:
        c.fail(f"format version {h['version']!r} is not supported (this loader reads version {VERSION})")
    frac_bits = c.arith_(arith.check_frac_bits, h["frac_bits"], "frac_bits")
    inp = c.keys(h["input"], ("features", "bits", "step"), "input")
    features = c.int_(inp["features"], "input.features", 1)
    in_bits = c.arith_(arith.check_abits, inp["bits"], "input.bits")
    in_step = c.pos_float(inp["step"], "input.step")
    classes = c.int_(h["classes"], "classes", 1)
    if not isinstance(h["provenance"], dict):
        c.fail(f"provenance must be a JSON object, got {type(h['provenance']).__name__}")
    layers = h["layers"]
    if not isinstance(layers, list) or not layers:
        c.fail("layers must be a non-empty list")
    out_layers, names = [], set()
    prev = {"fan_out": features, "abits_out": in_bits, "step_out": in_step, "name": "input"}
    for i, raw in enumerate(layers):
        L = c.keys(raw, _LAYER_KEYS, f"layer {i}")
        name = L["name"]
        if not isinstance(name, str) or not _NAME_RE.match(name):
            c.fail(f"layer {i} name {name!r} is not an identifier ([A-Za-z_][A-Za-z0-9_]*)")
        if name in names:
            c.fail(f"layer name {name!r} is used twice")
        names.add(name)
        w = f"layer {name!r}"
        if L["kind"] != "linear":
            c.fail(f"{w} kind {L['kind']!r} is not supported (only 'linear')")
        if not isinstance(L["final"], bool):
            c.fail(f"{w} final must be true or false, got {L['final']!r}")
        final = L["final"]
        is_last = i == len(layers) - 1
        if final != is_last:
            c.fail(f"{w} is {'final' if final else 'not final'} but is layer {i} of {len(layers)}; "
                   f"exactly one final layer, and it must be the last")
        n = {"name": name, "kind": "linear", "final": final,
             "fan_in": c.int_(L["fan_in"], f"{w} fan_in", 1),
             "fan_out": c.int_(L["fan_out"], f"{w} fan_out", 1),
             "wbits": c.arith_(arith.check_wbits, L["wbits"], f"{w} wbits"),
             "abits_in": c.arith_(arith.check_abits, L["abits_in"], f"{w} abits_in"),
             "alpha": c.pos_float(L["alpha"], f"{w} alpha"),
             "step_in": c.pos_float(L["step_in"], f"{w} step_in")}
        if final:
            for k in ("abits_out", "step_out", "mult", "shift"):
                if L[k] is not None:
                    c.fail(f"{w} is final, so {k} must be null, got {L[k]!r}")
            n.update(abits_out=None, step_out=None, mult=None, shift=None)
            if n["fan_out"] != classes:
                c.fail(f"final {w} has fan_out {n['fan_out']} but the model has {classes} classes")
        else:
            n["abits_out"] = c.arith_(arith.check_abits, L["abits_out"], f"{w} abits_out")
            n["step_out"] = c.pos_float(L["step_out"], f"{w} step_out")
            mult = c.int_(L["mult"], f"{w} mult")
            shift = c.int_(L["shift"], f"{w} shift")
            lo, hi = 2 ** (arith.MULT_BITS - 1), 2 ** arith.MULT_BITS
            if not lo <= mult < hi:
                c.fail(f"{w} mult {mult} outside the normalised range {lo}..{hi - 1}")
            if shift not in arith.SHIFT_RANGE:
                c.fail(f"{w} shift {shift} outside {arith.SHIFT_RANGE.start}..{arith.SHIFT_RANGE.stop - 1}")
            try:
                want = arith.fixed_point_multiplier(
                    requant_ratio(n["step_in"], n["alpha"], frac_bits, n["step_out"]))
            except arith.ArithError as exc:
                c.fail(f"{w} scales give no valid requantisation multiplier: {exc}")
            if (mult, shift) != want:
                c.fail(f"{w} (mult, shift) = ({mult}, {shift}) disagree with its steps and alpha, which give {want}")
            n["mult"], n["shift"] = mult, shift
        chain = [("fan_in", "fan_out"), ("abits_in", "abits_out"), ("step_in", "step_out")]
        input_names = {"fan_out": "input.features", "abits_out": "input.bits", "step_out": "input.step"}
        for mine, theirs in chain:
            if n[mine] != prev[theirs]:
                other = input_names[theirs] if i == 0 else f"layer {prev['name']!r} {theirs}"
                c.fail(f"{w} {mine} = {n[mine]!r} does not match {other} = {prev[theirs]!r}")
        out_layers.append(n)
        prev = n
    return {"frac_bits": frac_bits, "input_features": features, "input_bits": in_bits,
            "input_step": in_step, "classes": classes, "layers": out_layers,
            "provenance": h["provenance"]}


def _check_tensors(hdr: dict, tensors: dict, c: _Checker) -> None:
    expected = set()
    for L in hdr["layers"]:
        name = L["name"]
        expected |= {f"{name}.codes", f"{name}.bias"}
        codes, bias = tensors.get(f"{name}.codes"), tensors.get(f"{name}.bias")
        if codes is None or bias is None:
            c.fail(f"tensor {name + ('.codes' if codes is None else '.bias')!r} is missing")
        shape = (L["fan_out"], L["fan_in"])
        if codes.dtype != np.uint8 or codes.shape != shape:
            c.fail(f"tensor '{name}.codes' is {codes.dtype} {list(codes.shape)}, expected uint8 {list(shape)}")
        if bias.dtype != np.int64 or bias.shape != (L["fan_out"],):
            c.fail(f"tensor '{name}.bias' is {bias.dtype} {list(bias.shape)}, expected int64 [{L['fan_out']}]")
        top = 2 ** L["wbits"]
        if codes.size and int(codes.max()) >= top:
            c.fail(f"tensor '{name}.codes' holds code {int(codes.max())}, outside 0..{top - 1} "
                   f"for {L['wbits']}-bit POST weights")
        lim = bias_limit(L["fan_in"], L["abits_in"], hdr["frac_bits"])
        if bias.size and int(np.abs(bias).max()) > lim:
            c.fail(f"tensor '{name}.bias' magnitude {int(np.abs(bias).max())} exceeds the limit {lim} "
                   f"(fan_in * max product), so the accumulator could overflow")
    extra = sorted(set(tensors) - expected)
    if extra:
        c.fail(f"unexpected tensor(s) {extra[:4]} not described by the header")


def _build(hdr: dict, tensors: dict) -> IntModel:
    layers = []
    for L in hdr["layers"]:
        kw = {k: L[k] for k in _LAYER_KEYS if k not in ("fan_in", "fan_out")}
        layers.append(IntLayer(codes=np.ascontiguousarray(tensors[f"{L['name']}.codes"]),
                               bias=np.ascontiguousarray(tensors[f"{L['name']}.bias"]), **kw))
    return IntModel(frac_bits=hdr["frac_bits"], input_features=hdr["input_features"],
                    input_bits=hdr["input_bits"], input_step=hdr["input_step"], classes=hdr["classes"],
                    layers=layers, provenance=hdr["provenance"])


def validate_intmodel(model: IntModel, where: str = "<in-memory model>") -> None:
    """Check an in-memory :class:`IntModel` against ``docs/export.md`` (raises :class:`ModelFileError`)."""
    c = _Checker(where)
    if not isinstance(model, IntModel):
        c.fail(f"expected an IntModel, got {type(model).__name__}", "pass the result of export_model")
    if not all(isinstance(l, IntLayer) for l in model.layers):
        c.fail("layers must be IntLayer instances", "pass the result of export_model")
    for l in model.layers:
        for t in ("codes", "bias"):
            if not isinstance(getattr(l, t), np.ndarray) or getattr(l, t).ndim != (2 if t == "codes" else 1):
                c.fail(f"layer {l.name!r} {t} must be a {2 if t == 'codes' else 1}-D NumPy array")
    try:
        header = json.loads(json.dumps(model.header(), allow_nan=False))
    except (TypeError, ValueError) as exc:
        c.fail(f"header is not JSON-serialisable without NaN/inf: {exc}")
    hdr = _check_header(header, c)
    _check_tensors(hdr, model.tensors(), c)


# --- files -------------------------------------------------------------------

def save_intmodel(model: IntModel, path) -> None:
    """Validate ``model`` and write it to ``path`` as a safetensors file (``docs/export.md``)."""
    from safetensors.numpy import save_file

    p = os.fspath(path)
    validate_intmodel(model, where=f"{p} (not written)")
    tensors = {k: np.ascontiguousarray(v) for k, v in model.tensors().items()}
    save_file(tensors, p, metadata={METADATA_KEY: json.dumps(model.header(), allow_nan=False)})


def _reject_constant(name):
    raise ValueError(f"non-finite number {name} in JSON")


def read_model_file(path) -> tuple[_Checker, dict, dict]:
    """Open an exported model file with safetensors (never pickle): ``(checker, metadata, tensors)``.

    Shared by the v1 loader below and ``golden.graphfile.load_graph``; a missing path, a directory
    or an unreadable (truncated, corrupt, foreign) file raises :class:`ModelFileError` in one line.
    """
    from safetensors import safe_open

    p = os.fspath(path)
    c = _Checker(p)
    if not os.path.exists(p):
        c.fail("no such file", "check the path, or export a model first (`post-accel export`)")
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


def load_intmodel(path) -> IntModel:
    """Read and fully validate an integer model written by :func:`save_intmodel`.

    Raises :class:`ModelFileError` (one line: file, problem, fix) on any deviation.
    """
    c, meta, tensors = read_model_file(path)
    if METADATA_KEY not in meta:
        hint = ("it is a training checkpoint; export it first (`post-accel export`)"
                if "post_accel_checkpoint" in meta else "this is not a post-accel integer model")
        c.fail(f"safetensors metadata has no {METADATA_KEY!r} entry", hint)
    if len(meta[METADATA_KEY]) > 1 << 22:                 # the limits of golden.graphfile.load_graph
        c.fail(f"{METADATA_KEY!r} metadata is {len(meta[METADATA_KEY])} characters, more than the {1 << 22} a "
               f"model header may have")
    try:
        header = json.loads(meta[METADATA_KEY], parse_constant=_reject_constant)
    except RecursionError:
        c.fail(f"{METADATA_KEY!r} metadata is nested deeper than 32 levels")
    except ValueError as exc:
        c.fail(f"{METADATA_KEY!r} metadata is not valid JSON ({str(exc).splitlines()[0]})")
    hdr = _check_header(header, c)
    _check_tensors(hdr, tensors, c)
    return _build(hdr, tensors)
