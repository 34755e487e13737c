"""The CLI's error policy: user errors exit 2 in one line, bugs exit 70 with a traceback, no prefix
matching of flags, and no subcommand module imports another."""

import ast
from pathlib import Path

import pytest

from flows import cli
from flows.cliutil import UserError
from golden.errors import InputError, ToolMissing

FLOWS = Path(cli.__file__).parent


def _run_with(monkeypatch, capsys, exc):
    def boom(args):
        raise exc
    monkeypatch.setattr(cli.levels_cmd, "run", boom)
    monkeypatch.delenv("POST_ACCEL_DEBUG", raising=False)
    code = cli.main(["levels", "--quant", "post", "--bits", "3"])
    return code, capsys.readouterr().err


def test_user_error_is_one_line_exit_2(monkeypatch, capsys):
    code, err = _run_with(monkeypatch, capsys, UserError("--bits 9: use 2..8"))
    assert code == cli.EXIT_USER == 2
    assert err == "post-accel: error: --bits 9: use 2..8\n"


def test_missing_tool_is_a_user_error(monkeypatch, capsys):
    assert issubclass(ToolMissing, InputError)
    code, err = _run_with(monkeypatch, capsys, ToolMissing("yosys is not installed; apt-get install yosys"))
    assert code == 2 and err.count("\n") == 1 and "apt-get install yosys" in err


@pytest.mark.parametrize("exc", [ValueError("int too large"), KeyError("stage"), ZeroDivisionError("x")])
def test_bug_prints_traceback_and_exit_70(monkeypatch, capsys, exc):
    code, err = _run_with(monkeypatch, capsys, exc)
    assert code == cli.EXIT_BUG == 70
    assert "Traceback (most recent call last)" in err
    assert "this is a bug in post-accel" in err and type(exc).__name__ in err


def test_no_abbreviated_flags(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["generate", "--ro", "2", "--out", "unused"])
    assert info.value.code == 2
    assert "unrecognized arguments: --ro" in capsys.readouterr().err


def test_subcommands_do_not_import_each_other():
    """Every ``*_cmd`` module may import the shared helpers (cliutil) but no other subcommand."""
    commands = {p.stem for p in FLOWS.glob("*_cmd.py")} | {"cli", "synth"}
    for path in FLOWS.glob("*_cmd.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                parts = name.split(".")
                if parts[0] == "flows" and len(parts) > 1:
                    assert parts[1] not in commands - {path.stem}, f"{path.name} imports {name}"
