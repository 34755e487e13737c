"""``post-accel train``: quantization-aware training of a digits or Fashion-MNIST model
(:func:`golden.train_zoo.train_spec`, the one trainer); writes a checkpoint
(:func:`golden.train_zoo.save_checkpoint`, the one checkpoint format)."""

from __future__ import annotations

import time
from pathlib import Path

from flows.cliutil import DEFAULT_OUT, UserError, add_common_flags, emit, positive_int
from golden.safeio import check_output_path

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
                   help="digits model: mlp (default), cnn, or resnet8 (a ResNet-8 with residual adds); "
                        "`export` writes every one as the same integer graph")
    p.add_argument("--weight-quant", default="post",
                   help="weight quantizer: post (default), pot, apot, uniform, qil, fp")
    p.add_argument("--act-quant", default="lsq", help="activation quantizer: lsq (default), asq, qil, fp")
    p.add_argument("--wbits", type=int, default=4, help="hidden-layer weight bits (default 4)")
    p.add_argument("--abits", type=int, default=4, help="hidden-layer activation bits (default 4)")
    p.add_argument("--epochs", type=positive_int, default=None, help="QAT epochs (default: the config's)")
    p.add_argument("--fp-epochs", type=int, default=None,
                   help="float pre-training epochs before QAT (default: the spec's)")
    p.add_argument("--edge-weight-quant", default=None,
                   help="weight quantizer of the 8-bit first and last layers (default: post when --weight-quant "
                        "is post, so that every layer runs on the POST engine; else uniform)")
    p.add_argument("--edge-act-quant", default=None,
                   help="activation quantizer of the first and last layers (default lsq)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(DEFAULT_OUT / "checkpoint.safetensors"))
    add_common_flags(p)
    p.set_defaults(func=run)


DIGITS_MODELS = ("mlp", "cnn", "resnet8")


def run(args) -> int:
    from golden.train_zoo import TrainSpec, save_checkpoint, train_spec

    check_output_path(args.out, "--out")            # before training, not after it
    if args.model not in DIGITS_MODELS:
        raise UserError(f"train runs on the digits or Fashion-MNIST, so --model must be one of {', '.join(DIGITS_MODELS)} "
                        f"(got {args.model!r}; the ImageNet/CIFAR models are for perf and overhead)")
    kw = {"epochs": args.epochs} if args.epochs is not None else {}
    if args.fp_epochs is not None:
        kw["fp_epochs"] = args.fp_epochs
    if args.edge_weight_quant is not None:
        kw["edge_weight_quant"] = args.edge_weight_quant
    elif args.weight_quant == "post":
        kw["edge_weight_quant"] = "post"             # every layer runnable on the POST engine
    if args.edge_act_quant is not None:
        kw["edge_act_quant"] = args.edge_act_quant
    try:
        spec = TrainSpec(model=args.model, wbits=args.wbits, abits=args.abits, weight_quant=args.weight_quant,
                         act_quant=args.act_quant, seed=args.seed, data=args.data,
                         train_limit=args.train_samples, test_limit=args.test_samples, **kw)
    except ValueError as exc:                          # bit-widths or quantizer names the user chose
        raise UserError(str(exc).splitlines()[0]) from None
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
