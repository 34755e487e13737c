"""What the ``post-accel`` subcommands share: argument types and flags, the result printer, the
engine-parameter flags and the exported-model loader.

Each subcommand lives in its own ``flows/<name>_cmd.py`` module with ``add_parser(sub)`` and
``run(args)``; none imports another. Errors a user can fix are :class:`UserError` (a
:class:`golden.errors.InputError`): ``post-accel`` prints them in one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
from pathlib import Path

from golden.errors import InputError
from golden.safeio import check_input_file

__all__ = ["UserError", "DEFAULT_OUT", "int_at_least", "positive_int", "nonneg_int", "emit", "add_common_flags",
           "ENGINE_FLAGS", "add_engine_flags", "engine_params", "load_engine_model", "MAX_LANES", "MAX_PES",
           "check_buildable", "metadata_keys"]

#: Where commands write when ``--out`` is not given.
DEFAULT_OUT = Path("out")


class UserError(InputError):
    """An error in the command line or the files it names; reported in one line, no traceback."""


#: Largest array the generator builds (``generate``, ``synth``, ``simulate``): at most MAX_LANES rows and
#: columns and MAX_PES PEs. Elaborating it takes minutes (measured on this project's 2-core machine:
#: 16x16 47 s, 64x4 67 s, 32x32 more than 120 s); ``--cols 1000000`` would grow memory until killed.
MAX_LANES = 64
MAX_PES = 1024


def check_buildable(rows: int, cols: int) -> None:
    """Refuse an array the generator cannot build in reasonable time, before anything is built."""
    if rows > MAX_LANES or cols > MAX_LANES or rows * cols > MAX_PES:
        raise UserError(f"--rows {rows} --cols {cols}: the generator builds arrays of 1..{MAX_LANES} rows and "
                        f"1..{MAX_LANES} columns with at most {MAX_PES} PEs (e.g. 32x32 or 64x16); choose a "
                        f"smaller array (`post-accel perf` models larger ones without building them)")


def metadata_keys(path) -> set:
    """The safetensors metadata keys of ``path``; empty if it is not a readable safetensors file (the
    loaders then report why)."""
    from safetensors import safe_open

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):      # a FIFO would block: the loader says why
            return set()
        with safe_open(str(path), framework="numpy") as f:
            return set(f.metadata() or {})
    except Exception:  # noqa: BLE001 - unreadable: the loader gives the one-line reason
        return set()


#: Metadata keys of training checkpoints (zoo and MLP), which `export` turns into model files.
CHECKPOINT_KEYS = ("post_accel_zoo_checkpoint", "post_accel_checkpoint")


def int_at_least(lowest: int):
    """An argparse ``type`` accepting integers ``>= lowest`` with a one-line error otherwise."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < lowest:
            raise argparse.ArgumentTypeError(f"must be >= {lowest}, got {value}")
        return value
    parse.__name__ = f"integer >= {lowest}"
    return parse


positive_int = int_at_least(1)
nonneg_int = int_at_least(0)


def emit(args, result: dict, text: str) -> None:
    """Print ``result`` as one JSON object with ``--json``, else the human ``text``."""
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(text)


def add_common_flags(p) -> None:
    """``--json`` and ``--quiet``, which every subcommand takes."""
    p.add_argument("--json", action="store_true", help="print one JSON object of results")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


#: Engine parameters that have a flag (``--act-words`` -> ``act_words``); rows/cols are separate.
ENGINE_FLAGS = ("wbits", "abits", "frac_bits", "max_fan_in", "act_words", "weight_words", "chan_words",
                "result_words", "max_layers", "value_words", "adapter_words", "max_channels", "res_words")


def add_engine_flags(p, with_defaults: bool) -> None:
    """The engine's size flags (``--rows``, ``--cols``, bit-widths, memory depths)."""
    p.add_argument("--rows", type=positive_int, default=4, help="array rows = input lanes (default 4)")
    p.add_argument("--cols", type=positive_int, default=4, help="array columns = output lanes (default 4)")
    d = (lambda v: v) if with_defaults else (lambda v: None)
    p.add_argument("--wbits", type=int, default=d(4), help="POST weight code bits, 2..8")
    p.add_argument("--abits", type=int, default=d(4), help="activation code bits, 2..8")
    p.add_argument("--frac-bits", type=int, default=None, help="product fraction bits (default 8)")
    p.add_argument("--max-fan-in", type=positive_int, default=None, help="largest fan-in (accumulator width)")
    p.add_argument("--act-words", type=positive_int, default=None, help="depth of each activation bank")
    p.add_argument("--weight-words", type=positive_int, default=None, help="depth of the weight memory")
    p.add_argument("--chan-words", type=positive_int, default=None,
                   help="depth of the per-channel rescale parameter memory")
    p.add_argument("--value-words", type=positive_int, default=None,
                   help="depth of the value buffer (one layer's pixels x channels before pooling)")
    p.add_argument("--adapter-words", type=positive_int, default=None, help="depth of the ASQ adapter memory")
    p.add_argument("--max-channels", type=positive_int, default=None,
                   help="largest ASQ layer width (channel-sum memory depth)")
    p.add_argument("--res-words", type=positive_int, default=None,
                   help="depth of the residual memory (the values one layer keeps for a later residual add)")
    p.add_argument("--result-words", type=positive_int, default=None, help="depth of the result memory")
    p.add_argument("--max-layers", type=positive_int, default=None, help="layer descriptor slots")


def engine_params(args, model=None):
    """The engine the flags ask for; with ``model`` (an integer graph), sized for it first and then
    overridden by the flags."""
    from hw.program import EngineParams

    given = {k: getattr(args, k) for k in ENGINE_FLAGS if getattr(args, k, None) is not None}
    if model is not None:
        from flows.compile import engine_params_for_graph
        base = engine_params_for_graph(model, args.rows, args.cols)
        fields = {k: getattr(base, k) for k in ("rows", "cols") + ENGINE_FLAGS}
        fields.update(given)
        return EngineParams(**fields)
    return EngineParams(rows=args.rows, cols=args.cols, **given)


def load_engine_model(path):
    """The exported model at ``path``: an integer graph (:func:`golden.graphfile.load_graph`, which
    dispatches on the file's format tag and refuses older generations with the re-export command)."""
    from golden.graphfile import load_graph

    check_input_file(path, "model")
    if any(k in metadata_keys(path) for k in CHECKPOINT_KEYS):
        raise UserError(f"{path}: this is a training checkpoint, not a model file: export it first with "
                        f"`post-accel export {path} --out model.safetensors`")
    return load_graph(path)
