"""post-accel: train → export → generate → simulate, from the command line.

Every sub-command has ``--help`` and ``--json`` (one JSON object on stdout) and lives in its own
module ``flows/<name>_cmd.py`` (``flows/synth.py`` for ``synth``). Exit status: 0 success; 1 a
simulation that disagrees with the golden model (or a missed ``--fmax``); 2 an error the user can fix
(:class:`golden.errors.InputError`: bad flags, bad model files, missing tools), printed as one line;
3 a simulator or FPGA tool that failed; 70 a bug in post-accel (the traceback is printed, with a line
asking for a report).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from flows import (
    ablate_cmd,
    betas_cmd,
    export_cmd,
    generate_cmd,
    levels_cmd,
    overhead_cmd,
    perf_cmd,
    simulate_cmd,
    synth,
    train_cmd,
    vectors_cmd,
)
from flows.cliutil import UserError
from golden.errors import InputError

__all__ = ["main", "build_parser", "UserError", "EXIT_MISMATCH", "EXIT_USER", "EXIT_TOOL", "EXIT_BUG"]

EXIT_MISMATCH, EXIT_USER, EXIT_TOOL, EXIT_BUG = 1, 2, 3, 70

#: The subcommands in the order ``--help`` lists them.
COMMANDS = (train_cmd, export_cmd, generate_cmd, simulate_cmd, overhead_cmd, levels_cmd, perf_cmd, synth,
            ablate_cmd, vectors_cmd, betas_cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="post-accel", description=__doc__.split("\n")[0], allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    for p in sub.choices.values():               # `--ro 2` must not mean `--rows 2`
        p.allow_abbrev = False
    return parser


def _tool_errors() -> tuple:
    from flows.synth import SynthError
    from sim.rtl import SimulationError
    return (SimulationError, SynthError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if os.environ.get("POST_ACCEL_DEBUG"):
        return args.func(args)          # full tracebacks for developers
    try:
        return args.func(args)
    except (InputError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        print(f"post-accel: error: {exc}", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        print("post-accel: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:                      # `post-accel ... | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # noqa: BLE001 - the last resort: tool failures and bugs
        if isinstance(exc, _tool_errors()):
            print(f"post-accel: tool error: {exc}", file=sys.stderr)
            return EXIT_TOOL
        traceback.print_exc()
        print(f"post-accel: internal error ({type(exc).__name__}): this is a bug in post-accel, not in your "
              f"input; please report it with the command line and the traceback above", file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
