"""``post-accel train``: quantization-aware training of a digits or Fashion-MNIST model; writes a checkpoint."""

from __future__ import annotations

import time
from pathlib import Path

from flows.cliutil import DEFAULT_OUT, UserError, add_common_flags, emit, positive_int
from golden.safeio import atomic_output, check_output_path

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="QAT on the digits or Fashion-MNIST (MLP, CNN or ResNet-8, any "
                                     "weight/activation quantizer)")
    p.add_argument("--data", default="digits", choices=("digits", "fashion-mnist"),
                   help="data set: digits (default, 8x8) or fashion-mnist (28x28; apt-get install "
                        "dataset-fashion-mnist)")
    p.add_argument("--train-samples", type=positive_int, default=None,
                   help="train on the first N training samples only (quick runs; default all)")
    p.add_argument("--test-samples", type=positive_int, default=None,
                   help="evaluate on the first N test samples only (quick runs; default all)")
    p.add_argument("--model", default="mlp",
                   help="digits model: mlp (default), cnn, or resnet8 (a ResNet-8 with residual adds; "
                        "`export` writes it as a v3 DAG integer graph)")
    p.add_argument("--weight-quant", default="post",
                   help="weight quantizer: post (default), pot, apot, uniform, qil, fp")
    p.add_argument("--act-quant", default="lsq", help="activation quantizer: lsq (default), asq, qil, fp")
    p.add_argument("--wbits", type=int, default=4, help="hidden-layer weight bits (default 4)")
    p.add_argument("--abits", type=int, default=4, help="hidden-layer activation bits (default 4)")
    p.add_argument("--hidden", type=positive_int, nargs="+", default=[64, 32], help="hidden layer sizes")
    p.add_argument("--epochs", type=positive_int, default=None, help="QAT epochs (default: the config's)")
    p.add_argument("--fp-epochs", type=int, default=None,
                   help="float pre-training epochs before QAT (zoo models only; default: the spec's)")
    p.add_argument("--edge-weight-quant", default=None,
                   help="weight quantizer of the 8-bit first and last layers (zoo models; default uniform; "
                        "post makes every layer runnable on the POST engine)")
    p.add_argument("--edge-act-quant", default=None,
                   help="activation quantizer of the first and last layers (zoo models; default lsq)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(DEFAULT_OUT / "checkpoint.safetensors"))
    add_common_flags(p)
    p.set_defaults(func=run)


def _legacy_mlp(args) -> bool:
    """The engine-runnable path: the digits MLP with POST weights and LSQ activations (export v1)."""
    return (args.model == "mlp" and args.weight_quant == "post" and args.act_quant == "lsq"
            and args.data == "digits" and args.train_samples is None and args.test_samples is None)


def run(args) -> int:
    check_output_path(args.out, "--out")            # before training, not after it
    if not _legacy_mlp(args):
        return _train_zoo(args)
    from golden.train import TrainConfig, save_checkpoint, train

    cfg = TrainConfig(seed=args.seed, wbits=args.wbits, abits=args.abits, hidden=tuple(args.hidden),
                      **({"epochs": args.epochs} if args.epochs is not None else {}))
    started = time.perf_counter()
    model, metrics = train(cfg, progress=not (args.json or args.quiet))
    seconds = time.perf_counter() - started
    out = Path(args.out)
    with atomic_output(out, "--out") as tmp:
        save_checkpoint(model, cfg, metrics, tmp)
    result = {"checkpoint": str(out), "seconds": round(seconds, 2), "wbits": cfg.wbits, "abits": cfg.abits,
              "seed": cfg.seed, "epochs": cfg.epochs, "model": "mlp", "weight_quant": "post",
              "act_quant": "lsq", **{k: v for k, v in metrics.items()}}
    emit(args, result, f"trained W{cfg.wbits}A{cfg.abits} MLP {list(cfg.hidden)} in {seconds:.1f} s: "
          f"float QAT test accuracy {metrics['float_test_accuracy']:.4f} -> {out}")
    return 0


DIGITS_MODELS = ("mlp", "cnn", "resnet8")


def _train_zoo(args) -> int:
    from golden.train_zoo import TrainSpec, save_checkpoint, train_spec

    if args.model not in DIGITS_MODELS:
        raise UserError(f"train runs on the digits or Fashion-MNIST, so --model must be one of {', '.join(DIGITS_MODELS)} "
                        f"(got {args.model!r}; the ImageNet/CIFAR models are for perf and overhead)")
    kw = {"epochs": args.epochs} if args.epochs is not None else {}
    if args.fp_epochs is not None:
        kw["fp_epochs"] = args.fp_epochs
    if args.edge_weight_quant is not None:
        kw["edge_weight_quant"] = args.edge_weight_quant
    if args.edge_act_quant is not None:
        kw["edge_act_quant"] = args.edge_act_quant
    spec = TrainSpec(model=args.model, wbits=args.wbits, abits=args.abits, weight_quant=args.weight_quant,
                     act_quant=args.act_quant, seed=args.seed, data=args.data,
                     train_limit=args.train_samples, test_limit=args.test_samples, **kw)
    started = time.perf_counter()
    model, metrics = train_spec(spec, progress=not (args.json or args.quiet), integer=False)
    seconds = time.perf_counter() - started
    out = Path(args.out)
    save_checkpoint(model, spec, metrics, out, what="--out")
    acc = metrics.get("float_test_accuracy")
    result = {"checkpoint": str(out), "seconds": round(seconds, 2), "model": args.model, "wbits": args.wbits,
              "abits": args.abits, "weight_quant": args.weight_quant, "act_quant": args.act_quant,
              "seed": args.seed, "epochs": spec.epochs, "float_test_accuracy": acc, "data": spec.data,
              "n_train": metrics.get("n_train"), "n_test": metrics.get("n_test")}
    emit(args, result, f"trained {args.data} {args.model} W{args.wbits}A{args.abits} ({args.weight_quant} weights, "
          f"{args.act_quant} activations) in {seconds:.1f} s: float QAT test accuracy {acc:.4f} -> {out}")
    return 0
