"""The exported-model file (golden/graphfile.py, format post-accel-intgraph v4): round trip bit for bit for
chain models of any quantizers, and clear errors for bad files."""

import json

import pytest

from golden.data import load_digits_split
from golden.graphfile import load_graph, save_graph
from golden.intdag import export_dag, run_graph
from golden.modelfile import ModelFileError, OldModelFileError


@pytest.fixture(scope="module")
def digits():
    return load_digits_split()


@pytest.mark.parametrize("wq,aq", [("post", "lsq"), ("uniform", "asq"), ("post", "qil")])
def test_round_trip_is_exact(tmp_path, digits, wq, aq):
    from test_intgraph import _train
    model = _train(digits, "cnn", wq, aq, epochs=2)
    graph = export_dag(model)
    path = tmp_path / "m.safetensors"
    save_graph(graph, path, provenance={"test": True})
    loaded = load_graph(path)
    X = digits[2][:60]
    a, b = run_graph(graph, X), run_graph(loaded, X)
    assert all((x == y).all() for x, y in zip(a.codes, b.codes))
    assert (a.logits == b.logits).all()


@pytest.fixture(scope="module")
def saved(tmp_path_factory, digits):
    from test_intgraph import _train
    path = tmp_path_factory.mktemp("g") / "m.safetensors"
    save_graph(export_dag(_train(digits, "cnn", "post", "lsq", epochs=1)), path)
    return path


def _rewrite(src, dst, edit_header=None, edit_tensors=None):
    from safetensors import safe_open
    from safetensors.numpy import save_file
    with safe_open(str(src), framework="numpy") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    header = json.loads(meta["post_accel"])
    if edit_header:
        edit_header(header)
    if edit_tensors:
        edit_tensors(tensors)
    save_file(tensors, str(dst), metadata={"post_accel": json.dumps(header)})
    return dst


def test_bad_files(tmp_path, saved):
    with pytest.raises(ModelFileError, match="no such file"):
        load_graph(tmp_path / "missing.safetensors")
    trunc = tmp_path / "t.safetensors"
    trunc.write_bytes(saved.read_bytes()[:200])
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        load_graph(trunc)
    old = _rewrite(saved, tmp_path / "v2.safetensors", edit_header=lambda h: h.update(version=2))
    with pytest.raises(OldModelFileError, match="version-2 chain graph.*`post-accel export CHECKPOINT`"):
        load_graph(old)
    old = _rewrite(saved, tmp_path / "v1.safetensors", edit_header=lambda h: h.update(format="post-accel-intmodel",
                                                                                       version=1))
    with pytest.raises(OldModelFileError, match="version-1 MLP file.*`post-accel export CHECKPOINT`"):
        load_graph(old)
    bad = _rewrite(saved, tmp_path / "v.safetensors", edit_header=lambda h: h.update(version=99))
    with pytest.raises(ModelFileError, match="version 99"):
        load_graph(bad)

    def big_code(t):
        t["stage1.weights"] = t["stage1.weights"].copy()
        t["stage1.weights"].flat[0] = 99
    bad = _rewrite(saved, tmp_path / "c.safetensors", edit_tensors=big_code)
    with pytest.raises(ModelFileError, match="POST code outside"):
        load_graph(bad)
    bad = _rewrite(saved, tmp_path / "m.safetensors", edit_tensors=lambda t: t.pop("stage0.mult"))
    with pytest.raises(ModelFileError, match="stage0.mult"):
        load_graph(bad)
