"""Write the engine's Verilog and a JSON manifest of its parameters, memories, LUTs and ports.

Output is deterministic: the same parameters give byte-identical files (no dates, no paths
in the Verilog; the manifest records hashes, not times).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from importlib.metadata import version
from pathlib import Path

from golden import arith
from golden.safeio import check_output_dir, locked_dir, write_text_atomic
from hw.axi import AXI_TOP, HEADER_MAGIC, ID_VALUE, AxiMap, Irq, Reg, Status, axi_ports, axi_verilog
from hw.build import TOP, engine_ports, engine_verilog
from hw.program import CHAN_BITS, DESC_BITS, DESC_STRIDE, DescField, EngineParams, Sel

__all__ = ["generate", "manifest_for", "memories", "axi_manifest", "BUSES"]

#: Host interfaces of the generated top: the engine's own ports, or the AXI wrapper (``hw/axi.py``).
BUSES = ("native", "axi")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def axi_manifest(params: EngineParams) -> dict:
    """The AXI wrapper's register map and stream formats (``docs/engine.md``, "AXI wrapper")."""
    amap = AxiMap(params)
    return {"addr_width": amap.addr_width, "data_bits": 32, "registers": {r.name.lower(): int(r) for r in Reg},
            "status_bits": {b.name.lower(): int(b) for b in Status}, "irq_bits": {b.name.lower(): int(b) for b in Irq},
            "id": ID_VALUE, "mem_base": amap.mem_base, "pieces": amap.pieces, "piece_bits": amap.piece_bits,
            "mem_address": f"mem_base | sel << {params.addr_bits + amap.piece_bits + 2} | addr << "
                           f"{amap.piece_bits + 2} | piece << 2",
            "stream_beats": {s.name.lower(): amap.beats[s] for s in Sel},
            "header": {"word0": "addr[15:0] | sel[18:16] | magic[31:24]", "magic": HEADER_MAGIC,
                       "word1": "count (memory words, 1..65536)"}}


def manifest_for(params: EngineParams, verilog: str, bus: str = "native") -> dict:
    """Everything a user of the Verilog needs to know about it, as plain JSON data."""
    lut_entries = 2 ** params.abits
    lut_bits = arith.lut_entry_bits(params.abits, params.frac_bits)
    manifest = {
        "top": TOP if bus == "native" else AXI_TOP,
        "bus": bus,
        "generator": {"post-accel": version("post-accel") if _installed() else "source",
                      "amaranth": version("amaranth")},
        "params": dataclasses.asdict(params),
        "derived": {"acc_bits": params.acc_bits, "data_bits": params.data_bits, "bank_bits": params.bank_bits,
                    "addr_bits": params.addr_bits, "product_bits": arith.product_magnitude_bits(
                        params.abits, params.frac_bits) + 1,
                    "max_shift": arith.post_max_exponent(params.wbits) >> 1},
        "lut": {"sharing": "one per array row", "count": params.rows, "entries": lut_entries,
                "entry_bits": lut_bits, "bits_per_lut": lut_entries * lut_bits,
                "total_bits": params.rows * lut_entries * lut_bits},
        "memories": memories(params),
        "asq": {"table_entries": arith.asq_table_index_count(), "table_bits": arith.ASQ_TABLE_BITS,
                "z_frac": arith.ASQ_Z_FRAC, "z_limit": arith.ASQ_Z_LIMIT, "beta_frac": arith.ASQ_BETA_FRAC,
                "value_bits": arith.VALUE_BITS, "sum_bits": arith.VALUE_BITS,
                "adapter_bits": arith.ADAPTER_ACC_BITS},
        "descriptor": {"fields": [f.name.lower() for f in DescField], "stride": DESC_STRIDE, "bits": DESC_BITS},
        "ports": engine_ports(params) if bus == "native" else axi_ports(params),
        "sha256": _sha256(verilog.encode()),
    }
    if bus == "axi":
        manifest["axi"] = axi_manifest(params)
    return manifest


def memories(params: EngineParams) -> list[dict]:
    """Every on-chip memory of the engine: name, banks, depth (words), width (bits), total bits, role."""
    p = params
    rows = [
        ("act", p.rows, p.act_words, p.abits, "activation codes, one bank per array row (HWC regions)"),
        ("weight", 1, p.weight_words, p.rows * p.cols * p.wbits, "POST codes, one R x C tile a word"),
        ("chan", 1, p.chan_words, CHAN_BITS, "per-output-channel rescale {mult, shift, bias}"),
        ("value", 1, p.value_words, arith.VALUE_BITS, "one layer's values v before pooling and quantizing"),
        ("result", 1, p.result_words, arith.VALUE_BITS, "the final layer's values (logits)"),
        ("desc", 1, p.max_layers * DESC_STRIDE, DESC_BITS, "layer descriptors"),
        ("adapt", 1, p.adapter_words, arith.ADAPTER_ACC_BITS, "ASQ adapter weights and biases"),
        ("sums", 1, p.max_channels, arith.VALUE_BITS, "ASQ adapter inputs (scaled channel sums) of one layer"),
        ("res", 1, p.res_words, arith.VALUE_BITS, "one layer's pooled values kept for a later residual add"),
        ("table", 1, arith.asq_table_index_count(), arith.ASQ_TABLE_BITS,
         "ASQ {beta_mant, beta_shift, inv_mant, inv_shift} per z"),
        ("betas", 1, p.max_layers, arith.FACTOR_BITS, "the ASQ factor {mant, shift} each layer chose (its readers' rescale)"),
    ]
    return [{"name": n, "banks": b, "depth": d, "width": w, "bits": b * d * w, "role": r} for n, b, d, w, r in rows]


def _installed() -> bool:
    try:
        version("post-accel")
        return True
    except Exception:  # noqa: BLE001 - running from a source tree
        return False


def generate(params: EngineParams, out_dir: Path, model_path: str | None = None, bus: str = "native") -> dict:
    """Write ``out_dir/post_engine.v`` (``bus="axi"``: ``out_dir/post_engine_axi.v``, the engine behind
    AXI4-Lite and AXI4-Stream) and ``out_dir/manifest.json``; return the manifest."""
    if bus not in BUSES:
        raise ValueError(f"unknown bus {bus!r}; choose one of {', '.join(BUSES)}")
    out_dir = check_output_dir(out_dir, "--out")
    verilog = engine_verilog(params) if bus == "native" else axi_verilog(params)   # before touching out_dir
    manifest = manifest_for(params, verilog, bus)
    if model_path is not None:
        manifest["model"] = {"file": Path(model_path).name, "sha256": _sha256(Path(model_path).read_bytes())}
    vpath, mpath = out_dir / f"{manifest['top']}.v", out_dir / "manifest.json"
    with locked_dir(out_dir, "--out"):              # a concurrent run into the same --out waits for this one
        write_text_atomic(vpath, verilog, "--out")
        write_text_atomic(mpath, json.dumps(manifest, indent=2, sort_keys=True) + "\n", "--out")
    manifest = dict(manifest, verilog=str(vpath), manifest=str(mpath))
    return manifest
