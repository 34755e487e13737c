"""Integer graphs (golden.intdag): the exported stages run bit for bit like golden.intgraph.run_dag (the
PyTorch-side walk), survive the file round trip (format post-accel-intgraph v4), and dataflow without a
stage form is refused by name."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from golden import zoo
from golden.data import load_digits_split
from golden.graphfile import DAG_VERSION, load_graph, save_graph
from golden.intdag import export_dag, run_graph, stage_units
from golden.intgraph import ExportError, run_dag
from golden.modelfile import METADATA_KEY, ModelFileError


@pytest.fixture(scope="module")
def digits():
    return load_digits_split()


def _calibrated(name, aq, X, wq="post", seed=0):
    torch.manual_seed(seed)
    m = zoo.build_model(name, 4, 4, wq, aq, edge_weight_quant="post",
                        edge_act_quant=aq if aq != "qil" else "lsq")
    m.train()
    with torch.no_grad():
        m(torch.tensor(np.asarray(X), dtype=torch.float32))
    return m.eval()


@pytest.mark.parametrize("aq", ["asq", "lsq", "qil"])
def test_resnet8_stages_equal_run_dag(digits, aq):
    xtr, _, xte, _ = digits
    m = _calibrated("resnet8", aq, xtr[:256])
    g = export_dag(m)
    assert g.kind == "dag" and g.output == "fc"
    names = [st.name for st in g.stages]
    assert names[0] == "conv1" and g.stages[0].input_from == "input"
    # the downsampling shortcut reads the block input, conv2 adds it
    sc = g.stages[names.index("layers.1.downsample.0")]
    assert sc.input_from == "layers.0.conv2" and not sc.relu
    c2 = g.stages[names.index("layers.1.conv2")]
    assert c2.residual[0] == "layers.1.downsample.0" and c2.relu
    assert g.stages[names.index("layers.0.conv2")].residual[0] == "conv1"          # identity shortcut
    assert ("sumpool",) in g.stages[names.index("layers.2.conv2")].post_ops
    got, want = run_graph(g, xte[:120]), run_dag(m, xte[:120], units=stage_units(g))
    np.testing.assert_array_equal(got.logits, want.logits)
    for st, codes in zip(g.stages, got.codes):
        np.testing.assert_array_equal(codes, want.codes[st.name])


def test_resnet20_and_chain_cnn_equal_run_dag(digits):
    X = np.random.RandomState(1).rand(4, 3, 32, 32) * 2
    m = _calibrated("resnet20", "asq", X)
    g = export_dag(m)
    assert len(g.stages) == 22                    # 19 convs + 2 shortcut convs + fc
    np.testing.assert_array_equal(run_graph(g, X).logits, run_dag(m, X, units=stage_units(g)).logits)
    xtr, _, xte, _ = digits
    cnn = _calibrated("cnn", "asq", xtr[:256])
    g = export_dag(cnn)
    assert [st.input_from for st in g.stages][1:] == [st.name for st in g.stages][:-1]
    np.testing.assert_array_equal(run_graph(g, xte[:60]).logits, run_dag(cnn, xte[:60], units=stage_units(g)).logits)


def test_dag_file_round_trip(digits, tmp_path):
    xtr, _, xte, _ = digits
    m = _calibrated("resnet8", "asq", xtr[:256], seed=3)
    path = tmp_path / "r8.safetensors"
    save_graph(export_dag(m), path)
    g = load_graph(path)
    assert g.kind == "dag"
    np.testing.assert_array_equal(run_graph(g, xte).logits, run_dag(m, xte, units=stage_units(g)).logits)


def _rewrite_header(path, out, edit):
    from safetensors.numpy import load_file, save_file
    from safetensors import safe_open
    with safe_open(str(path), "np") as f:
        meta = f.metadata()
    h = json.loads(meta[METADATA_KEY])
    edit(h)
    save_file(load_file(str(path)), str(out), metadata={METADATA_KEY: json.dumps(h)})


@pytest.mark.parametrize("edit,needle", [
    (lambda h: h["stages"][2].update(residual=["fc", 1, 1]), "residual"),
    (lambda h: h["stages"][1].update(input_from="layers.2.conv2"), "input_from"),
    (lambda h: h.update(output="nowhere"), "output"),
    (lambda h: h["stages"][1].update(in_shift=99), "in_shift"),
    (lambda h: h["stages"][1].pop("residual"), "residual"),
    (lambda h: h.update(version=7), "version"),
])
def test_corrupt_dag_files_are_refused(digits, tmp_path, edit, needle):
    xtr = digits[0]
    path = tmp_path / "r8.safetensors"
    save_graph(export_dag(_calibrated("resnet8", "lsq", xtr[:128])), path)
    bad = tmp_path / "bad.safetensors"
    _rewrite_header(path, bad, edit)
    with pytest.raises(ModelFileError, match=needle):
        load_graph(bad)


class _SwappedAdd(nn.Module):
    """``identity + out``: the add's first operand is not the fresh layer output."""

    def __init__(self):
        super().__init__()
        f = zoo._Factory(4, 4, "post", "lsq", edge_weight_quant="post")
        self.conv1, self.conv2 = f.conv(1, 4, 3), f.conv(4, 4, 3)
        self.fc = f.linear(4 * 64, 10)
        self.input_shape = (1, 8, 8)

    def forward(self, x):
        a = F.relu(self.conv1(x))
        return self.fc(torch.flatten(F.relu(a + self.conv2(a)), 1))


class _ReluAfterPool(_SwappedAdd):
    def forward(self, x):
        a = F.relu(F.max_pool2d(self.conv1(x), 1))
        return self.fc(torch.flatten(F.relu(self.conv2(a)), 1))


def test_unsupported_dataflow_is_named(digits):
    xtr = digits[0]
    m = _SwappedAdd()
    m.train()
    with torch.no_grad():
        m(torch.tensor(xtr[:64].reshape(-1, 1, 8, 8), dtype=torch.float32))
    m.eval()
    with pytest.raises(ExportError, match="residual add on the output of conv1 after conv2 read it"):
        export_dag(m)
    mb = zoo.build_model("mobilenetv2", 4, 4, "post", "lsq", num_classes=10)
    mb.train()
    with torch.no_grad():
        mb(torch.rand(2, 3, 64, 64))
    with pytest.raises(ExportError, match="ReLU6"):
        export_dag(mb.eval(), input_shape=(3, 64, 64))


def test_dag_version_constant():
    assert DAG_VERSION == 4
