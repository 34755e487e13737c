"""The markers of tests/conftest.py: every test of the suite is classified (a tool marker, or PURE), no
table row is stale, and `-m` selects on them as make test-fast expects.

The suite is collected in a subprocess (`pytest --collect-only --marker-report`), so the check covers
every test file, not only those of the current run.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import COST_MARKERS, FIXTURE_MARKERS, MARKER_TABLE, PURE, TOOL_MARKERS, classification_problems, classify

REPO = Path(__file__).resolve().parent.parent
FAST = "not sim and not yosys and not slow"          # the Makefile's test-fast selection


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """(the classification of every test of tests/, the node ids the test-fast selection keeps): one
    `pytest --collect-only -m FAST --marker-report` (the report is written before `-m` deselects)."""
    out = tmp_path_factory.mktemp("markers") / "report.json"
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "--marker-report", str(out), "-m", FAST, "tests"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text()), [line for line in proc.stdout.splitlines() if "::" in line]


def test_every_test_is_classified_and_no_row_is_stale(suite):
    report, _ = suite
    assert len(report) > 500, f"only {len(report)} tests collected"
    assert "tests/test_markers.py::test_every_test_is_classified_and_no_row_is_stale" in report
    problems = classification_problems(report)
    assert not problems, "\n".join(problems)


def test_every_marker_is_used_and_the_fast_layer_is_a_proper_subset(suite):
    report, fast = suite
    for marker in TOOL_MARKERS + COST_MARKERS:
        assert any(marker in entry["markers"] for entry in report.values()), marker
    expected = {nodeid for nodeid, entry in report.items() if not {"sim", "yosys", "slow"} & set(entry["markers"])}
    assert set(fast) == expected                  # -m saw the markers the conftest hook added
    assert 0 < len(fast) < len(report)
    assert all(report[nodeid]["pure"] or report[nodeid]["markers"] for nodeid in fast)


def test_registered_markers_are_the_table_markers(pytestconfig):
    registered = {line.split(":", 1)[0].strip() for line in pytestconfig.getini("markers")}
    assert set(TOOL_MARKERS + COST_MARKERS) <= registered
    used = set().union(*(row for _, row in MARKER_TABLE), *FIXTURE_MARKERS.values())
    assert used <= set(TOOL_MARKERS + COST_MARKERS)


def test_classification_catches_an_escaping_test():
    table = [("tests/test_a.py::test_sim", {"icarus"}), ("tests/test_a.py::test_gone", {"yosys"}),
             ("tests/test_b.py", {"slow"})]
    pure = ["tests/test_a.py::test_pure", "tests/test_a.py::test_both"]
    ids = ["tests/test_a.py::test_sim[x-1]", "tests/test_a.py::test_simple", "tests/test_a.py::test_pure",
           "tests/test_a.py::test_both", "tests/test_b.py::test_c", "tests/test_a.py::test_fixture"]
    fixtures = {"tests/test_a.py::test_both": ["trained_cnn"], "tests/test_a.py::test_fixture": ["trained_model"]}
    report = {i: classify(i, fixtures.get(i, ()), (), table, pure) for i in ids}
    assert report["tests/test_a.py::test_sim[x-1]"]["markers"] == ["icarus", "sim"]      # prefix up to "["
    assert report["tests/test_a.py::test_simple"]["markers"] == []                       # not a prefix match
    assert report["tests/test_a.py::test_fixture"]["markers"] == ["torch_train"]
    assert classify("tests/test_a.py::test_own", (), ["verilator", "parametrize"], [], [])["markers"] == \
        ["sim", "verilator"]
    assert sorted(classification_problems(report, table, pure)) == [
        "PURE but marked ['torch_train']: tests/test_a.py::test_both",
        "stale row, matches no test: tests/test_a.py::test_gone",
        "unclassified: tests/test_a.py::test_simple (add it to MARKER_TABLE or PURE in tests/conftest.py)",
        "unclassified: tests/test_b.py::test_c (add it to MARKER_TABLE or PURE in tests/conftest.py)",
    ]
