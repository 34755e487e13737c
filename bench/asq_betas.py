"""The ASQ factor ``beta`` each ASQ quantizer of a trained model picks over the test set, as a histogram.

Trains the given models (the quick ASQ specs of tests/conftest.py, or ``make demo``'s CNN), runs the
test set through the integer executor (the betas the RTL is fed) and writes
``bench/results/asq_betas.json`` and ``docs/asq_betas.png`` (one panel per ASQ quantizer). Usage::

    nice -n 10 .venv/bin/python bench/asq_betas.py [--models cnn-quick resnet8-quick demo] [--data digits]

Needs matplotlib (not a runtime dependency of the package).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from flows.betas_cmd import betas_of  # noqa: E402
from golden.data import load_dataset  # noqa: E402
from golden.train_zoo import TrainSpec, train_spec  # noqa: E402

_ASQ = {"weight_quant": "post", "act_quant": "asq", "edge_weight_quant": "post", "wbits": 4, "abits": 4, "seed": 0}
#: The trained ASQ models whose betas are reported: tests/conftest.py's quick specs and `make demo`'s CNN.
SPECS = {
    "cnn-quick": {"model": "cnn", **_ASQ, "epochs": 6, "fp_epochs": 6},
    "resnet8-quick": {"model": "resnet8", **_ASQ, "epochs": 4, "fp_epochs": 4},
    "demo": {"model": "cnn", **_ASQ},
}


def measure(name: str, data: str, train_limit: int | None) -> dict:
    from golden.intdag import export_dag

    spec = TrainSpec(**SPECS[name], data=data, train_limit=train_limit)
    t0 = time.perf_counter()
    model, metrics = train_spec(spec, progress=False, integer=False)
    model.eval()
    graph = export_dag(model)
    _, _, x_test, y_test = load_dataset(data).split()
    from golden.intdag import run_graph
    acc = float((run_graph(graph, x_test).predictions == y_test).mean())
    return {"name": name, "spec": spec.to_dict(), "float_test_accuracy": metrics["float_test_accuracy"],
            "integer_test_accuracy": acc, "seconds": round(time.perf_counter() - t0, 1),
            "samples": int(len(x_test)), "quantizers": betas_of(graph, x_test)}


def plot(results: list, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(r, q) for r in results for q in r["quantizers"]]
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax, (r, q) in zip(axes.flat, panels):
        betas = [h["beta"] for h in q["histogram"]]
        counts = [h["count"] for h in q["histogram"]]
        ax.bar(betas, counts, width=0.006, color="tab:blue")
        ax.set_title(f"{r['name']} {q['stage']}: {q['distinct']} betas", fontsize=8)
        ax.set_xlabel("beta", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("ASQ factor beta per quantizer over the test set (integer executor)", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["cnn-quick", "resnet8-quick"], choices=tuple(SPECS))
    ap.add_argument("--data", default="digits", choices=("digits", "fashion-mnist"))
    ap.add_argument("--train-limit", type=int, default=None)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "asq_betas.json"))
    ap.add_argument("--png", default=str(REPO / "docs" / "asq_betas.png"))
    args = ap.parse_args(argv)
    results = []
    for name in args.models:
        r = measure(name, args.data, args.train_limit)
        results.append(r)
        print(f"{name}: integer accuracy {r['integer_test_accuracy']:.4f}, {r['seconds']} s; distinct betas per "
              f"quantizer: " + ", ".join(f"{q['stage']} {q['distinct']}" for q in r["quantizers"]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"command": "bench/asq_betas.py " + " ".join(argv or sys.argv[1:]),
                                          "data": args.data, "results": results}, indent=1) + "\n")
    plot(results, Path(args.png))
    return 0


if __name__ == "__main__":
    sys.exit(main())
