"""Scaling of the engine's cycle model: ResNet/MobileNet shapes on arrays from 4x4 to 64x64.

Writes bench/results/scaling.json and docs/scaling.png (utilisation and cycles vs array size).
Run: .venv/bin/python bench/scaling.py
"""

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim.cycle_model import model_perf, shapes_for_model  # noqa: E402

MODELS = ("resnet18", "resnet34", "resnet20", "mobilenetv2")
SIZES = (4, 8, 16, 32, 64)


def main() -> dict:
    rows = []
    started = time.perf_counter()
    for name in MODELS:
        shapes, unmodelled = shapes_for_model(name)
        for n in SIZES:
            r = model_perf(shapes, n, n, 100.0, unmodelled)
            rows.append({"model": name, "array": f"{n}x{n}", "rows": n, "cols": n, "cycles": r["total_cycles"],
                         "utilisation": r["utilisation"], "latency_ms_at_100MHz": r["latency_us"] / 1000,
                         "useful_macs": r["useful_macs"]})
    seconds = time.perf_counter() - started
    out = {"date": time.strftime("%Y-%m-%d"), "command": "python bench/scaling.py", "seconds": seconds,
           "rows": rows}
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "results" / "scaling.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"{'model':<12} {'array':>6} {'cycles':>14} {'util':>7} {'ms@100MHz':>10}")
    for r in rows:
        print(f"{r['model']:<12} {r['array']:>6} {r['cycles']:>14,} {r['utilisation']:>7.1%} "
              f"{r['latency_ms_at_100MHz']:>10.2f}")
    print(f"{len(rows)} design points in {seconds:.2f} s")
    _plot(rows)
    return out


def _plot(rows) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in MODELS:
        pts = [r for r in rows if r["model"] == name]
        x = [r["rows"] for r in pts]
        ax1.plot(x, [100 * r["utilisation"] for r in pts], marker="o", label=name)
        ax2.plot(x, [r["cycles"] for r in pts], marker="o", label=name)
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xticks(SIZES, [f"{n}x{n}" for n in SIZES])
        ax.set_xlabel("POST array (rows x cols)")
        ax.grid(True, which="both", alpha=0.3)
    ax1.set_ylabel("utilisation of the R*C MAC/cycle peak (%)")
    ax1.set_title("Array utilisation (conv/linear layers)")
    ax2.set_yscale("log")
    ax2.set_ylabel("cycles per image")
    ax2.set_title("Cycles per image")
    ax1.legend()
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "scaling.png", dpi=110)


if __name__ == "__main__":
    main()
