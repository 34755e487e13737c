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
from hw.build import engine_ports, engine_verilog
from hw.program import EngineParams

__all__ = ["generate", "manifest_for"]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_for(params: EngineParams, verilog: str) -> dict:
    """Everything a user of the Verilog needs to know about it, as plain JSON data."""
    lut_entries = 2 ** params.abits
    lut_bits = arith.lut_entry_bits(params.abits, params.frac_bits)
    return {
        "top": "post_engine",
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
        "memories": [
            {"name": "act", "banks": params.rows, "depth": params.act_words, "width": params.abits},
            {"name": "weight", "banks": 1, "depth": params.weight_words,
             "width": params.rows * params.cols * params.wbits},
            {"name": "bias", "banks": 1, "depth": params.bias_words, "width": params.acc_bits},
            {"name": "result", "banks": 1, "depth": params.result_words, "width": params.acc_bits},
        ],
        "ports": engine_ports(params),
        "sha256": _sha256(verilog.encode()),
    }


def _installed() -> bool:
    try:
        version("post-accel")
        return True
    except Exception:  # noqa: BLE001 - running from a source tree
        return False


def generate(params: EngineParams, out_dir: Path, model_path: str | None = None) -> dict:
    """Write ``out_dir/post_engine.v`` and ``out_dir/manifest.json``; return the manifest."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} exists and is not a directory; choose a directory path")
    out_dir.mkdir(parents=True, exist_ok=True)
    verilog = engine_verilog(params)
    manifest = manifest_for(params, verilog)
    if model_path is not None:
        manifest["model"] = {"file": Path(model_path).name, "sha256": _sha256(Path(model_path).read_bytes())}
    vpath, mpath = out_dir / "post_engine.v", out_dir / "manifest.json"
    vpath.write_text(verilog)
    mpath.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    manifest = dict(manifest, verilog=str(vpath), manifest=str(mpath))
    return manifest
