"""``post-accel ablate``: the quantizer ablation (the ASQ paper's Table 5, widened) on the digits CNN
(default) or the Fashion-MNIST CNN (``--data fashion-mnist``).

Every (method, bit-width, seed) is one independent training job (:func:`golden.train_zoo.train_spec`)
run through :func:`flows.jobs.run_jobs`: a Dask ``LocalCluster`` by default, ``--scheduler ADDRESS``
for a running cluster, ``--serial`` for an in-process loop. Each job is seeded and single-threaded,
so the results do not depend on where or in which order the jobs run (``state_sha256`` of every
trained model is reported to prove it). The float ``fp`` method does not depend on the bit-width:
it runs once per seed and is repeated in every bit-width's rows.

Methods (``--methods``, case-insensitive; low-bit layers only, the first and last layer are
8-bit ``uniform`` weights / ``lsq`` activations for every quantized method):

=============  ================  ====================
method         weights           activations
=============  ================  ====================
``fp``         float             float
``lsq``        ``uniform`` (LSQ) ``lsq``
``lsq+pot``    ``pot``           ``lsq``
``lsq+post``   ``post``          ``lsq``
``lsq+apot``   ``apot``          ``lsq``
``qil``        ``qil``           ``qil``
``asq``        ``uniform`` (LSQ) ``asq``
``asq+post``   ``post``          ``asq``
=============  ================  ====================

A (method, bits) a quantizer does not support is reported as an ``unsupported`` row with the
reason; nothing crashes. ``--json`` prints one JSON object (settings, per-run results, aggregated
rows); otherwise a Markdown table. ``--out FILE`` also writes the JSON object to a file.
Unknown method names raise ``ValueError`` listing the valid ones (one error line from the CLI).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass

from flows.cliutil import UserError
from flows.cliutil import nonneg_int as _nonneg_int
from flows.cliutil import positive_int as _positive_int
from golden.safeio import check_output_path, write_text_atomic

__all__ = ["METHODS", "METHOD_ORDER", "FULL", "QUICK", "add_parser", "run", "resolve_methods", "plan_jobs",
           "run_job", "aggregate", "ablate", "format_markdown", "command_line"]


@dataclass(frozen=True)
class Method:
    """One row family of the ablation: display label and the low-bit layers' quantizers."""

    label: str
    weight_quant: str
    act_quant: str


#: The ablation's methods, in the order of the table.
METHODS: dict[str, Method] = {
    "fp": Method("FP", "fp", "fp"),
    "lsq": Method("LSQ", "uniform", "lsq"),
    "lsq+pot": Method("LSQ+POT", "pot", "lsq"),
    "lsq+post": Method("LSQ+POST", "post", "lsq"),
    "lsq+apot": Method("LSQ+APoT", "apot", "lsq"),
    "qil": Method("QIL", "qil", "qil"),
    "asq": Method("ASQ", "uniform", "asq"),
    "asq+post": Method("ASQ+POST", "post", "asq"),
}
METHOD_ORDER = tuple(METHODS)

#: Settings of the full ablation (docs/results.md) and of ``--quick``.
FULL = {"bits": (2, 3, 4), "seeds": 3, "epochs": 20, "fp_epochs": 10}
QUICK = {"bits": (4,), "seeds": 1, "epochs": 5, "fp_epochs": 3}
#: What ``--quick`` also sets per data set unless given (Fashion-MNIST: a tiny subset, so CI stays cheap).
QUICK_LIMITS = {"digits": {}, "fashion-mnist": {"train_limit": 256, "test_limit": 500}}
#: Training hyper-parameters shared by every job unless overridden on the command line.
TRAIN_DEFAULTS = {"model": "cnn", "lr": 0.02, "batch_size": 64, "momentum": 0.9, "weight_decay": 1e-4}


def resolve_methods(names) -> list[str]:
    """Canonical method keys for ``names`` (case-insensitive, order of :data:`METHODS`, no repeats)."""
    if names is None:
        return list(METHOD_ORDER)
    wanted = []
    for n in names:
        key = str(n).strip().lower()
        if key not in METHODS:
            raise UserError(f"unknown ablation method {n!r}; valid: {', '.join(METHOD_ORDER)}")
        if key not in wanted:
            wanted.append(key)
    if not wanted:
        raise UserError(f"no ablation method given; valid: {', '.join(METHOD_ORDER)}")
    return [m for m in METHOD_ORDER if m in wanted]


def _spec_dict(method: str, bits: int, seed: int, train: dict) -> dict:
    m = METHODS[method]
    return {"wbits": bits, "abits": bits, "weight_quant": m.weight_quant, "act_quant": m.act_quant,
            "seed": seed, **train}


def plan_jobs(methods, bits, seeds, train: dict):
    """Jobs and unsupported cells of an ablation.

    Returns ``(jobs, unsupported)``: ``jobs`` is a list of plain dicts ``{"method", "bits", "seed",
    "spec"}`` (``bits`` None for ``fp``, which runs once per seed); ``unsupported`` maps
    ``(method, bits)`` to the reason the quantizers reject that bit-width.
    """
    from golden.train_zoo import TrainSpec

    jobs, unsupported = [], {}
    for method in methods:
        if METHODS[method].weight_quant == "fp" and METHODS[method].act_quant == "fp":
            spec = _spec_dict(method, max(bits), 0, train)
            TrainSpec.from_dict(spec)                       # validates the shared settings
            jobs += [{"method": method, "bits": None, "seed": s, "spec": {**spec, "seed": s}} for s in seeds]
            continue
        for b in bits:
            spec = _spec_dict(method, b, 0, train)
            try:
                TrainSpec.from_dict(spec)
            except ValueError as exc:
                if "does not support" not in str(exc):
                    raise
                unsupported[(method, b)] = str(exc)
                continue
            jobs += [{"method": method, "bits": b, "seed": s, "spec": {**spec, "seed": s}} for s in seeds]
    return jobs, unsupported


def run_job(job: dict) -> dict:
    """Train one job (module-level so Dask can ship it); failures come back as data (``error``)."""
    from golden.train_zoo import TrainSpec, train_spec

    out = {"method": job["method"], "bits": job["bits"], "seed": job["seed"]}
    try:
        _, metrics = train_spec(TrainSpec.from_dict(job["spec"]), progress=False)
    except Exception as exc:            # noqa: BLE001 - one diverged run must not kill the sweep
        out["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return out
    for k in ("float_test_accuracy", "integer_test_accuracy", "integer_error", "fp_test_accuracy",
              "float_train_accuracy", "final_loss", "state_sha256", "seconds"):
        out[k] = metrics.get(k)
    return out


def _mean_std(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    mean = statistics.fmean(vals)
    return mean, (statistics.stdev(vals) if len(vals) > 1 else None)


def aggregate(methods, bits, runs, unsupported) -> list[dict]:
    """One row per (method, bits): mean ± sample std (ddof 1) over seeds, in percent
    (std None for a single run).

    ``delta_vs_lsq`` is the paired difference to LSQ (same seed = same float pre-trained network),
    mean ± std, when LSQ ran with the same seeds.
    """
    by_key: dict = {}
    for r in runs:
        by_key.setdefault((r["method"], r["bits"]), []).append(r)
    rows = []
    for b in bits:
        lsq = {r["seed"]: r for r in by_key.get(("lsq", b), []) if "error" not in r}
        for method in methods:
            row = {"method": method, "label": METHODS[method].label, "bits": b,
                   "weight_quant": METHODS[method].weight_quant, "act_quant": METHODS[method].act_quant}
            if (method, b) in unsupported:
                row.update(status="unsupported", reason=unsupported[(method, b)])
                rows.append(row)
                continue
            key = (method, None) if (method, None) in by_key else (method, b)
            cell = by_key.get(key, [])
            ok = [r for r in cell if "error" not in r]
            failed = [r for r in cell if "error" in r]
            pct = lambda v: None if v is None else 100.0 * v  # noqa: E731
            f_mean, f_std = _mean_std([pct(r["float_test_accuracy"]) for r in ok])
            i_vals = [pct(r["integer_test_accuracy"]) for r in ok]
            i_mean, i_std = _mean_std(i_vals)
            gaps = [pct(r["integer_test_accuracy"]) - pct(r["float_test_accuracy"]) for r in ok
                    if r["integer_test_accuracy"] is not None]
            g_mean, g_std = _mean_std(gaps)
            deltas = [pct(r["float_test_accuracy"]) - pct(lsq[r["seed"]]["float_test_accuracy"]) for r in ok
                      if r["seed"] in lsq]
            d_mean, d_std = _mean_std(deltas) if method != "lsq" else (None, None)
            int_errors = sorted({r["integer_error"] for r in ok if r.get("integer_error")})
            row.update(status="ok" if ok else "failed", n=len(ok), seeds=sorted(r["seed"] for r in ok),
                       float_mean=f_mean, float_std=f_std, float_runs=[pct(r["float_test_accuracy"]) for r in ok],
                       int_mean=i_mean, int_std=i_std, int_n=sum(v is not None for v in i_vals),
                       gap_mean=g_mean, gap_std=g_std, delta_vs_lsq_mean=d_mean, delta_vs_lsq_std=d_std,
                       integer_errors=int_errors, errors=[r["error"] for r in failed],
                       seconds_mean=_mean_std([r["seconds"] for r in ok])[0])
            rows.append(row)
    return rows


def command_line(methods, bits, seeds: int, train: dict, epochs: int, fp_epochs: int) -> str:
    """The ``post-accel ablate`` command that reproduces these settings exactly."""
    parts = ["post-accel", "ablate", "--methods", *methods, "--bits", *map(str, bits), "--seeds", str(seeds),
             "--epochs", str(epochs), "--fp-epochs", str(fp_epochs)]
    for k, flag in (("model", "--model"), ("lr", "--lr"), ("batch_size", "--batch-size"),
                    ("weight_decay", "--weight-decay")):
        if train[k] != TRAIN_DEFAULTS[k]:
            parts += [flag, str(train[k])]
    return " ".join(parts)


def ablate(methods=None, bits=FULL["bits"], seeds: int = FULL["seeds"], *, epochs: int = FULL["epochs"],
           fp_epochs: int = FULL["fp_epochs"], model: str = TRAIN_DEFAULTS["model"], lr: float = TRAIN_DEFAULTS["lr"],
           batch_size: int = TRAIN_DEFAULTS["batch_size"], weight_decay: float = TRAIN_DEFAULTS["weight_decay"],
           train_limit: int | None = None, test_limit: int | None = None, data: str = "digits",
           scheduler: str | None = None, serial: bool = False,
           workers: int | None = None, progress: bool = True) -> dict:
    """Run the ablation and return one JSON-serialisable dict (settings, runs, rows, unsupported, timing)."""
    from flows.jobs import DEFAULT_WORKERS, run_jobs

    methods = resolve_methods(methods)
    bits = list(dict.fromkeys(int(b) for b in bits))
    if not bits:
        raise UserError("--bits needs at least one bit-width")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise UserError(f"--seeds must be a positive integer, got {seeds!r}")
    train = {"model": model, "data": data, "lr": float(lr), "batch_size": int(batch_size), "momentum": TRAIN_DEFAULTS["momentum"],
             "weight_decay": float(weight_decay), "epochs": int(epochs), "fp_epochs": int(fp_epochs)}
    if train_limit is not None:
        train["train_limit"] = int(train_limit)
    if test_limit is not None:
        train["test_limit"] = int(test_limit)
    jobs, unsupported = plan_jobs(methods, bits, list(range(seeds)), train)
    t0 = time.perf_counter()
    runs = run_jobs(run_job, jobs, scheduler=scheduler, progress=progress, serial=serial,
                    workers=DEFAULT_WORKERS if workers is None else workers, desc="ablate")
    seconds = time.perf_counter() - t0
    import torch

    return {
        "command": command_line(methods, bits, seeds, train, epochs, fp_epochs)
        + (f" --data {data}" if data != "digits" else "")
        + (f" --train-limit {train_limit}" if train_limit is not None else "")
        + (f" --test-limit {test_limit}" if test_limit is not None else ""),
        "settings": {"methods": methods, "bits": bits, "seeds": list(range(seeds)), **train,
                     "edge": "8-bit uniform weights + 8-bit LSQ activations on the first and last layer",
                     "runner": "serial" if serial else (scheduler or f"LocalCluster({workers or DEFAULT_WORKERS})")},
        "jobs": len(jobs),
        "seconds": round(seconds, 1),
        "torch": torch.__version__,
        "unsupported": [{"method": m, "bits": b, "reason": r} for (m, b), r in unsupported.items()],
        "rows": aggregate(methods, bits, runs, unsupported),
        "runs": runs,
    }


# --- text output -------------------------------------------------------------------

def _pm(mean, std, digits=2, signed=False):
    if mean is None:
        return "n/a"
    fmt = f"{{:{'+' if signed else ''}.{digits}f}}"
    if std is None:                     # a single run: no spread to report
        return fmt.format(mean)
    return f"{fmt.format(mean)} ± {std:.{digits}f}"


def format_markdown(result: dict) -> str:
    """The ablation as Markdown: a summary pivot (float accuracy) and the full per-row table."""
    rows = result["rows"]
    bits = result["settings"]["bits"]
    methods = result["settings"]["methods"]
    cell = {(r["method"], r["bits"]): r for r in rows}
    n_seeds = len(result["settings"]["seeds"])
    data = result["settings"].get("data", "digits")
    n_test = result["settings"].get("test_limit") or {"digits": 360, "fashion-mnist": 10000}[data]
    lines = [f"Float test accuracy (%) of the fake-quantized model, mean ± std over {n_seeds} seed(s); "
             f"{data} test set ({n_test} samples: one sample = {100 / n_test:.2g} points).", "",
             "| Method | " + " | ".join(f"W{b}A{b}" for b in bits) + " |",
             "|---|" + "---|" * len(bits)]
    for m in methods:
        cells = []
        for b in bits:
            r = cell[(m, b)]
            cells.append("unsupported" if r["status"] == "unsupported" else
                         ("failed" if r["status"] == "failed" else _pm(r["float_mean"], r["float_std"])))
        lines.append(f"| {METHODS[m].label} | " + " | ".join(cells) + " |")
    lines += ["", "Per row: float and integer test accuracy (%), the integer-minus-float gap (points) and the "
              "paired difference to LSQ at the same bits and seed (points).", "",
              "| Method | Bits | n | Float acc | Integer acc | Int − float | Δ vs LSQ (paired) | Note |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        bits_txt = f"W{r['bits']}A{r['bits']}" if r["method"] != "fp" else f"32 (col. {r['bits']})"
        if r["status"] == "unsupported":
            lines.append(f"| {r['label']} | {bits_txt} | 0 | — | — | — | — | unsupported: {r['reason']} |")
            continue
        note = []
        if r["errors"]:
            note.append(f"{len(r['errors'])} run(s) failed: {r['errors'][0]}")
        if r["int_n"] == 0 and r["method"] == "fp":
            note.append("float model: no integer form")
        elif r["int_n"] == 0:
            note.append("integer: " + ("; ".join(r["integer_errors"]) or "not measured"))
        elif r["int_n"] < r["n"]:
            note.append(f"integer on {r['int_n']}/{r['n']} runs")
        lines.append(f"| {r['label']} | {bits_txt} | {r['n']} | {_pm(r['float_mean'], r['float_std'])} | "
                     f"{_pm(r['int_mean'], r['int_std'])} | {_pm(r['gap_mean'], r['gap_std'], signed=True)} | "
                     f"{_pm(r['delta_vs_lsq_mean'], r['delta_vs_lsq_std'], signed=True)} | {'; '.join(note)} |")
    return "\n".join(lines)


# --- command line ------------------------------------------------------------------

def add_parser(subparsers):
    """Register the ``ablate`` sub-command on an ``argparse`` sub-parser collection."""
    p = subparsers.add_parser("ablate", help="quantizer ablation on the digits CNN (Dask jobs, mean ± std)",
                              description=__doc__.split("\n")[0])
    p.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                   help=f"methods to run (default all): {', '.join(METHOD_ORDER)}")
    p.add_argument("--bits", type=int, nargs="+", default=None,
                   help=f"bit-widths of the low-bit layers (default {' '.join(map(str, FULL['bits']))})")
    p.add_argument("--seeds", type=_positive_int, default=None,
                   help=f"seeds 0..N-1 per cell (default {FULL['seeds']})")
    p.add_argument("--epochs", type=_positive_int, default=None, help=f"QAT epochs (default {FULL['epochs']})")
    p.add_argument("--fp-epochs", type=_nonneg_int, default=None,
                   help=f"float pre-training epochs (default {FULL['fp_epochs']})")
    p.add_argument("--data", choices=("digits", "fashion-mnist"), default="digits",
                   help="data set (default digits; fashion-mnist needs apt-get install dataset-fashion-mnist)")
    p.add_argument("--model", choices=("cnn", "mlp"), default=TRAIN_DEFAULTS["model"], help="model")
    p.add_argument("--lr", type=float, default=TRAIN_DEFAULTS["lr"], help="initial SGD learning rate")
    p.add_argument("--batch-size", type=_positive_int, default=TRAIN_DEFAULTS["batch_size"])
    p.add_argument("--weight-decay", type=float, default=TRAIN_DEFAULTS["weight_decay"])
    p.add_argument("--train-limit", type=_positive_int, default=None,
                   help="train on the first N training samples only (smoke tests; default all; --quick on "
                        f"fashion-mnist: {QUICK_LIMITS['fashion-mnist']['train_limit']})")
    p.add_argument("--test-limit", type=_positive_int, default=None,
                   help="evaluate on the first N test samples only (default all; --quick on fashion-mnist: "
                        f"{QUICK_LIMITS['fashion-mnist']['test_limit']})")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: {QUICK['seeds']} seed, bits {' '.join(map(str, QUICK['bits']))}, "
                        f"{QUICK['fp_epochs']}+{QUICK['epochs']} epochs, a subset of fashion-mnist "
                        f"(explicit flags still win)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="address of a running Dask scheduler (default: start a LocalCluster)")
    p.add_argument("--workers", type=_positive_int, default=None, help="LocalCluster worker processes (default 2)")
    p.add_argument("--serial", action="store_true", help="run the jobs in this process, without Dask")
    p.add_argument("--out", default=None, help="also write the JSON object to this file")
    p.add_argument("--json", action="store_true", help="print one JSON object of results")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """Run ``post-accel ablate`` from parsed ``args``; 0 on success (also when some runs failed)."""
    base = QUICK if args.quick else FULL
    pick = lambda given, key: base[key] if given is None else given  # noqa: E731
    if args.scheduler is not None and args.serial:
        raise UserError("--scheduler and --serial exclude each other")
    limits = QUICK_LIMITS[args.data] if args.quick else {}
    train_limit = limits.get("train_limit") if args.train_limit is None else args.train_limit
    test_limit = limits.get("test_limit") if args.test_limit is None else args.test_limit
    if args.out is not None:
        check_output_path(args.out, "--out")             # before the (long) training runs
    result = ablate(resolve_methods(args.methods), pick(args.bits, "bits"), pick(args.seeds, "seeds"),
                    epochs=pick(args.epochs, "epochs"), fp_epochs=pick(args.fp_epochs, "fp_epochs"),
                    model=args.model, lr=args.lr, batch_size=args.batch_size, weight_decay=args.weight_decay,
                    train_limit=train_limit, test_limit=test_limit, data=args.data, scheduler=args.scheduler, serial=args.serial, workers=args.workers,
                    progress=not (args.json or args.quiet))
    if args.out is not None:
        write_text_atomic(args.out, json.dumps(result, indent=1, sort_keys=True, allow_nan=False) + "\n", "--out")
    if args.json:
        print(json.dumps(result, sort_keys=True, allow_nan=False))
    else:
        print(f"{result['command']}\n{result['jobs']} jobs in {result['seconds']:.1f} s "
              f"({result['settings']['runner']})\n")
        print(format_markdown(result))
    return 0
