"""``post-accel overhead``: ASQ adapter parameters and operations relative to the quantized network.

Prints a table like Table 1 of the ASQ paper (Eq. 10-16, :mod:`golden.overhead`) for a model of
:mod:`golden.zoo`; ``--json`` prints one JSON object instead. Bad input raises ``ValueError`` with
a clear message (``post-accel`` turns it into one error line and exit status 2).
"""

from __future__ import annotations

import json

from flows.cliutil import UserError

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Register the ``overhead`` sub-command on an ``argparse`` sub-parser collection."""
    p = subparsers.add_parser("overhead", help="ASQ adapter parameter/compute overhead (the paper's Table 1)")
    p.add_argument("--model", default="resnet18",
                   help="mlp, cnn, resnet18, resnet34, resnet20 or mobilenetv2 (default resnet18)")
    p.add_argument("--bits", type=int, nargs="+", default=[8, 4, 3, 2], help="bit-widths B of the rows")
    p.add_argument("--ratio", type=int, default=16, help="adapter reduction ratio r (hidden = C/r, default 16)")
    p.add_argument("--adapter-layers", type=int, default=2, help="1 (C->1) or 2 (C->C/r->1) linear layers")
    p.add_argument("--adapter-bits", type=int, default=32, help="storage/compute bits of the adapter (32 = float)")
    p.add_argument("--edge-bits", type=int, default=None,
                   help="first/last layer bits (default: every layer at B, as the paper's Table 1)")
    p.add_argument("--adapt-edges", action="store_true", help="also put adapters on the first and last layer")
    p.add_argument("--input-size", type=int, default=None, help="input height = width (default: the model's)")
    p.add_argument("--num-classes", type=int, default=None, help="classifier width (default: the model's)")
    p.add_argument("--json", action="store_true", help="print one JSON object of results")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from golden.overhead import PAPER_TABLE1, AdapterSpec, format_table, overhead
    from golden.zoo import build_model, layer_shapes

    spec = AdapterSpec(ratio=args.ratio, layers=args.adapter_layers, bits=args.adapter_bits)
    model = build_model(args.model, 8, 8, weight_quant="fp", act_quant="fp", num_classes=args.num_classes)
    shape = tuple(model.input_shape)
    if args.input_size is not None:
        if len(shape) != 3:
            raise UserError(f"--input-size applies to image models; {args.model} takes {shape[0]} features")
        if args.input_size < 1:
            raise UserError(f"--input-size must be >= 1, got {args.input_size}")
        shape = (shape[0], args.input_size, args.input_size)
    try:
        shapes = layer_shapes(model, shape)
    except RuntimeError as exc:          # e.g. an input too small for the network's down-sampling
        raise UserError(f"{args.model} cannot run on input {shape}: {exc}") from exc
    result = overhead(shapes, args.bits, spec, edge_bits=args.edge_bits, adapt_edges=args.adapt_edges)
    paper = PAPER_TABLE1 if (args.model == "resnet18" and shape == (3, 224, 224)) else None
    result.update({"model": args.model, "input_shape": list(shape),
                   "paper_table1": ({str(b): {"param_pct": p, "compute_pct": c} for b, (p, c) in paper.items()}
                                    if paper else None)})
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(format_table(result, args.model, paper))
    return 0
