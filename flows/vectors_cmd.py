"""``post-accel vectors``: golden test vectors for any POST accelerator RTL, not only this project's engine.

For the first ``--samples`` digits of the test split, the exported integer graph is run by the golden
executor (:func:`golden.intgraph.run_graph`) and everything a testbench needs is written to ``--out``:
the input codes, every stage's input codes, sums of products and pre-quantization values, the logits
and predictions, and every stage's arithmetic parameters (POST weight codes, √2 LUT, rescale
``mult``/``shift``/``bias`` and ``acc_shift``, quantizer and ASQ adapter parameters and tables), with a
``manifest.json`` describing each array. ``docs/vectors.md`` documents the layout;
:mod:`sim.vectors` loads it (numpy only) and compares a DUT's outputs with it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tempfile
from pathlib import Path

import numpy as np

from flows.cliutil import UserError, add_common_flags, emit
from sim.vectors import VECTORS_FORMAT, VECTORS_VERSION

__all__ = ["add_parser", "run", "FORMATS", "build_vectors", "write_vectors", "check_out_dir"]

FORMATS = ("npy", "hex", "json")
NETWORK = "network"            #: the ``layer`` of the arrays that belong to no single stage


def add_parser(sub) -> None:
    text = ("golden vectors for your own RTL: input codes, every layer's expected codes and values, "
            "shapes and arithmetic parameters, with a manifest (docs/vectors.md)")
    p = sub.add_parser("vectors", help=text, description=text)
    p.add_argument("model", help="an exported integer graph file (`post-accel export`)")
    p.add_argument("--samples", type=int, default=16,
                   help="how many digits test samples (the first N of the test split; default 16)")
    p.add_argument("--out", required=True, help="directory to write (created if missing)")
    p.add_argument("--format", choices=FORMATS, default="npy",
                   help="npy: one .npy per array; hex: $readmemh text files (two's complement, width in the "
                        "manifest); json: one JSON file per layer (default npy)")
    add_common_flags(p)
    p.set_defaults(func=run)


# --- what the vectors hold ------------------------------------------------------------------------

def _quant_dict(q) -> dict:
    d = {"kind": q.kind, "bits": int(q.bits), "lo": int(q.lo), "hi": int(q.hi), "scale": float(q.scale),
         "zero": float(q.zero), "value_step": float(q.value_step), "value_frac": int(q.value_frac), "adapter": None}
    ad = q.adapter
    if ad is not None and hasattr(ad, "e1"):
        d["adapter"] = {"integer": True, "e1": int(ad.e1), "e2": int(ad.e2), "h_shift": int(ad.h_shift),
                        "factor": ad.factor, "layers": 1 if ad.w2 is None else 2, "z_frac": int(ad.z_frac)}
    elif ad is not None:
        d["adapter"] = {"integer": False, "factor": ad.adapter.factor,
                        "note": "float adapter on the real input, run by the host; its per-sample beta is "
                                "the network/input_beta array"}
    return d


def _in_quant(graph, i: int):
    st = graph.stages[i]
    if st.in_quant is not None:
        return st.in_quant
    return graph.input_quant if i == 0 or st.input_from == "input" else graph.stages[i - 1].out


def build_vectors(graph, x, labels) -> tuple[list, list]:
    """``(layers, arrays)``: per-stage parameter records, and ``(layer, name, array, per_sample, meaning[,
    (bits, signed)])`` for every array (the optional pair: the width the arithmetic defines, for hex), from
    the golden executor run on the real inputs ``x``."""
    from golden import arith
    from golden.intdag import run_graph

    run = run_graph(graph, x)
    if len(run.accs) != len(graph.stages) or len(run.values) != len(graph.stages):
        raise RuntimeError("run_graph did not return per-stage accumulators and values")
    in_q = graph.input_quant
    arrays = [(NETWORK, "input_codes", run.codes[_first_stage(graph)], True,
               "the network input quantized to codes [N, *input_shape] (the first stage's input)",
               (int(in_q.bits) + (in_q.lo < 0), bool(in_q.lo < 0)))]
    if run.betas[_first_stage(graph)] is not None:
        arrays.append((NETWORK, "input_beta", run.betas[_first_stage(graph)], True,
                       f"per-sample ASQ factor of the input quantizer, fixed point 2**-{arith.ASQ_BETA_FRAC}"))
    arrays += [(NETWORK, "logits", run.logits, True,
                "the output stage's value [N, classes] (integers; argmax = prediction)"),
               (NETWORK, "predictions", run.predictions, True, "argmax of logits [N]"),
               (NETWORK, "labels", np.asarray(labels), True, "dataset labels [N] (not a hardware output)")]
    layers = []
    for i, st in enumerate(graph.stages):
        q = _in_quant(graph, i)
        in_bits = graph.stages[i].in_quant.bits
        rec = {"index": i, "name": st.name, "kind": st.kind, "weight_format": st.weight_format,
               "wbits": int(st.wbits), "abits": int(in_bits), "frac_bits": int(st.frac_bits),
               "stride": int(st.stride), "padding": int(st.padding), "groups": int(st.groups),
               "weight_shape": list(st.weights.shape), "input_beta": bool(st.input_beta), "relu": bool(st.relu),
               "relu_floor": int(st.relu_floor), "post_ops": [list(op) for op in st.post_ops],
               "acc_shift": int(st.acc_shift),
               "value_frac": int(st.value_frac),
               "input_from": st.input_from if st.input_from is not None else
               ("input" if i == 0 else graph.stages[i - 1].name),
               "in_quant": _quant_dict(q),
               "in_rescale": (None if graph.kind != "dag" or st.input_from == "input" else
                              {"mult": int(st.in_mult), "shift": int(st.in_shift), "offset": int(st.in_offset)}),
               "residual": None if st.residual is None else {"from": st.residual[0], "mult": int(st.residual[1]),
                                                             "shift": int(st.residual[2])},
               "out_quant": _quant_dict(st.out) if getattr(st, "out", None) is not None else None,
               "input_shape": list(run.codes[i].shape[1:]), "acc_shape": list(run.accs[i].shape[1:]),
               "value_shape": list(run.values[i].shape[1:])}
        layers.append(rec)
        n = st.name
        arrays.append((n, "in_codes", run.codes[i], True,
                       (f"input codes of {n}: what its input quantizer ({q.kind}, {q.bits} bits) makes of "
                        f"{rec['input_from']}'s value, i.e. the expected output codes of that quantizer"),
                       (int(q.bits) + (q.lo < 0), bool(q.lo < 0))))
        if run.betas[i] is not None:
            arrays.append((n, "in_beta", run.betas[i], True,
                           f"per-sample ASQ factor of {n}'s input quantizer, fixed point 2**-{arith.ASQ_BETA_FRAC}"))
        arrays.append((n, "acc", run.accs[i], True,
                       f"sums of products of {n} [N, out channels, ...] before the rescale"
                       + (" (POST products, units 2**-frac_bits)" if st.weight_format == "post" else "")))
        arrays.append((n, "value", run.values[i], True,
                       f"pre-quantization value of {n}: golden.arith.stage_value(acc, mult, shift, bias, "
                       f"acc_shift={int(st.acc_shift)}" + (", in_beta)" if st.input_beta else ")")
                       + (", + residual" if st.residual is not None else "")
                       + f", saturated to {arith.VALUE_BITS} bits"
                       + (", ReLU" if st.relu else "") + "".join(f", {op[0]}" for op in st.post_ops)))
        wmeaning = ("POST weight codes (sign bit MSB, magnitude m: |w| = alpha * 2**(-(m-1)/2), m = 0 is zero)"
                    if st.weight_format == "post" else "integer weights (level table)")
        arrays.append((n, "weights", st.weights, False, f"{wmeaning}, shape {list(st.weights.shape)}",
                       (int(st.wbits), False) if st.weight_format == "post" else None))
        arrays.append((n, "mult", st.mult, False,
                       f"per output channel rescale multiplier, signed, |mult| < 2**{arith.MULT_BITS}",
                       (arith.MULT_BITS + 1, True)))
        arrays.append((n, "shift", st.shift, False, "per output channel rescale right shift (round half up)",
                       ((arith.SHIFT_RANGE.stop - 1).bit_length(), False)))
        arrays.append((n, "bias", st.bias, False, "per output channel rescale bias in value units (added after the shift)",
                       (arith.BIAS_BITS, True)))
        if st.weight_format == "post":
            arrays.append((n, "lut", np.asarray(arith.sqrt2_lut(in_bits, st.frac_bits), dtype=np.int64), False,
                           (f"sqrt(2) LUT: round_half_up(x * 2**{st.frac_bits} / sqrt 2) for each input code "
                            f"x (odd POST exponents)"), (arith.lut_entry_bits(in_bits, st.frac_bits), False)))
        ad = q.adapter
        if q.kind == "asq" and ad is not None and hasattr(ad, "e1"):
            arrays.append((n, "in_adapter_w1", ad.w1, False, f"ASQ adapter layer-1 weights, units 2**-{ad.e1}"))
            arrays.append((n, "in_adapter_b1", ad.b1, False, f"ASQ adapter layer-1 biases, units 2**-{ad.e1}"))
            if ad.w2 is not None:
                arrays.append((n, "in_adapter_w2", ad.w2, False, f"ASQ adapter layer-2 weights, units 2**-{ad.e2}"))
                arrays.append((n, "in_adapter_b2", ad.b2, False,
                               f"ASQ adapter layer-2 biases, units 2**-{ad.e1 + ad.e2 - ad.h_shift} "
                               f"(hidden units shifted right by {ad.h_shift})"))
        if q.kind == "asq" and ad is not None:
            fac = ad.factor if hasattr(ad, "e1") else ad.adapter.factor
            beta_t, inv_t = arith.asq_tables(fac)
            arrays.append((n, "in_beta_table", beta_t, False,
                           f"ASQ {fac} factor table beta(z) * 2**{arith.ASQ_BETA_FRAC}, index asq_z_index(z)"))
            arrays.append((n, "in_inv_beta_table", inv_t, False,
                           f"ASQ {fac} inverse factor table 2**{arith.ASQ_BETA_FRAC} / beta(z)"))
    return layers, arrays


def _first_stage(graph) -> int:
    if graph.kind != "dag":
        return 0
    return next(i for i, st in enumerate(graph.stages) if st.input_from == "input")


# --- writing --------------------------------------------------------------------------------------

def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name)


def _hex_width(a: np.ndarray, fixed: tuple | None = None) -> tuple[int, bool]:
    """``(bits, signed)``: the hardware width ``fixed`` the arithmetic defines for this array if the data fit
    it, else the narrowest two's complement (or unsigned, if no value is negative) width of the data."""
    lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
    if fixed is not None:
        bits, signed = fixed
        if (signed and -(1 << (bits - 1)) <= lo and hi < (1 << (bits - 1))) or (not signed and lo >= 0 and
                                                                               hi < (1 << bits)):
            return bits, signed
    if lo >= 0:
        return max(1, hi.bit_length()), False
    return max(hi.bit_length(), (-lo - 1).bit_length()) + 1, True


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _npy_bytes(a: np.ndarray) -> bytes:
    import io
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def _hex_bytes(a: np.ndarray, bits: int) -> bytes:
    digits = (bits + 3) // 4
    mask = (1 << bits) - 1
    return "".join(f"{int(v) & mask:0{digits}x}\n" for v in a.reshape(-1)).encode()


def check_out_dir(out, create: bool = True) -> Path:
    """``--out`` as a directory path: refuse a file or special file, create it if missing (with ``create``)."""
    path = Path(out)
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError) as exc:
        if not create and isinstance(exc, FileNotFoundError):
            return path
        try:
            path.mkdir(parents=True)
        except (FileExistsError, NotADirectoryError, PermissionError) as exc:
            raise UserError(f"--out {out}: cannot create the directory ({exc.strerror}); give a directory path") \
                from None
        return path
    if not stat.S_ISDIR(st.st_mode):
        what = "a file" if stat.S_ISREG(st.st_mode) else "a special file"
        raise UserError(f"--out {out} is {what}, not a directory; give a new or existing directory")
    return path


def write_vectors(out, graph, x, labels, fmt: str, model_path) -> dict:
    """Write the vectors of ``graph`` on real inputs ``x`` to directory ``out`` in ``fmt``; return the manifest."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    out = check_out_dir(out)
    layers, arrays = build_vectors(graph, x, labels)
    digest = hashlib.sha256(Path(model_path).read_bytes()).hexdigest()
    entries, per_layer_json = [], {}
    order = [NETWORK] + [st.name for st in graph.stages]
    for layer, name, a, per_sample, meaning, *width in arrays:
        a = np.ascontiguousarray(np.asarray(a, dtype=np.int64))
        stem = (NETWORK if layer == NETWORK else f"{order.index(layer) - 1:02d}_{_safe(layer)}")
        e = {"layer": layer, "name": name, "shape": list(a.shape), "dtype": "int64", "per_sample": per_sample,
             "meaning": meaning}
        if fmt == "npy":
            e["file"] = f"{stem}.{name}.npy"
            _atomic_write(out / e["file"], _npy_bytes(a))
        elif fmt == "hex":
            bits, signed = _hex_width(a, width[0] if width else None)
            e.update(file=f"{stem}.{name}.hex", width=bits, signed=signed, order="C (row-major), one value a line")
            _atomic_write(out / e["file"], _hex_bytes(a, bits))
        else:
            e.update(file=f"{stem}.json", key=name)
            per_layer_json.setdefault(e["file"], {"layer": layer, "arrays": {}})["arrays"][name] = {
                "shape": list(a.shape), "dtype": "int64", "meaning": meaning, "data": a.tolist()}
        entries.append(e)
    for fname, doc in per_layer_json.items():
        _atomic_write(out / fname, json.dumps(doc).encode())
    manifest = {"format": VECTORS_FORMAT, "version": VECTORS_VERSION, "vector_format": fmt,
                "model": {"file": os.path.basename(os.fspath(model_path)), "sha256": digest, "kind": graph.kind,
                          "meta": graph.meta},
                "samples": len(x), "dataset": "digits test split (golden.data.load_digits_split), first N",
                "input_shape": list(graph.input_shape), "input_quant": _quant_dict(graph.input_quant),
                "output": graph.output if graph.kind == "dag" else graph.stages[-1].name,
                "layers": layers, "arrays": entries}
    _atomic_write(out / "manifest.json", json.dumps(manifest, indent=1).encode())
    return manifest


def run(args) -> int:
    from golden.data import load_digits_split
    from golden.graphfile import load_graph

    _, _, x_test, y_test = load_digits_split()
    if not 1 <= args.samples <= len(x_test):
        raise UserError(f"--samples must be in 1..{len(x_test)} (the digits test split), got {args.samples}")
    out = check_out_dir(args.out, create=False)      # before the (slow) model run
    graph = load_graph(args.model)
    need = int(np.prod(graph.input_shape))
    if need != x_test.shape[1]:
        raise UserError(f"{args.model}: input shape {list(graph.input_shape)} is not the digits' 64 pixels; "
                        f"vectors are made from the digits test split")
    manifest = write_vectors(out, graph, x_test[:args.samples], y_test[:args.samples], args.format, args.model)
    files = sorted({e["file"] for e in manifest["arrays"]})
    result = {"out": str(out), "format": args.format, "samples": args.samples, "layers": len(manifest["layers"]),
              "arrays": len(manifest["arrays"]), "files": len(files) + 1, "model_sha256": manifest["model"]["sha256"]}
    emit(args, result, f"{len(manifest['arrays'])} arrays of {len(manifest['layers'])} layers x {args.samples} "
                       f"samples -> {out}/ ({args.format}, {len(files) + 1} files with manifest.json)")
    return 0
