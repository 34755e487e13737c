"""The IDX reader and the Fashion-MNIST loader (golden/idx.py), the data-set entry point (golden/data.py),
the zoo models at 28x28 and the data-set checks of the CLI (train, betas, simulate)."""

from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pytest
import torch

from golden import zoo
from golden.data import (DATASET_INPUT_SHAPES, check_model_dataset, load_dataset, model_dataset)
from golden.errors import InputError
from golden.idx import FASHION_MNIST_PACKAGE, IdxError, load_fashion_mnist, read_idx
from test_cli import assert_clean_error, cli

RNG = np.random.default_rng(12)


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    """An IDX file holding ``arr`` (element type ``code``)."""
    dt = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    return (bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
            + np.ascontiguousarray(arr, dtype=dt).tobytes())


def write(path, data: bytes, gz: bool = False):
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


# --- read_idx -------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("code,dtype", [(0x08, np.uint8), (0x09, np.int8), (0x0B, np.int16), (0x0C, np.int32),
                                        (0x0D, np.float32), (0x0E, np.float64)])
def test_read_idx_round_trip(tmp_path, gz, code, dtype):
    arr = (RNG.integers(-100, 100, size=(3, 4, 5)) if code != 0x08 else RNG.integers(0, 256, size=(3, 4, 5)))
    arr = arr.astype(dtype)
    got = read_idx(write(tmp_path / "a.idx", idx_bytes(arr, code), gz))
    assert got.dtype == np.dtype(dtype) and got.shape == (3, 4, 5)
    np.testing.assert_array_equal(got, arr)


@pytest.mark.parametrize("mutate,words", [
    (lambda b: b"\x01" + b[1:], ["bad magic", "not an IDX file"]),
    (lambda b: b[:2] + b"\x07" + b[3:], ["unknown IDX element type 0x07"]),
    (lambda b: b[:2], ["too short for the 4-byte IDX magic"]),
    (lambda b: b[:4] + b"\x00\x00", ["too short for the 2 dimension sizes"]),
    (lambda b: b[:-1], ["truncated", "need 12 bytes", "has 11"]),
    (lambda b: b + b"\x00", ["trailing bytes", "has 13"]),
    (lambda b: b[:3] + b"\x00" + b[4:], ["0 dimensions"]),
])
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_corrupt(tmp_path, mutate, words, gz):
    good = idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4))
    path = write(tmp_path / "bad.idx", mutate(good), gz)
    with pytest.raises(IdxError) as e:
        read_idx(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    for w in words:
        assert w in str(e.value)


def test_read_idx_expectations_and_bad_gzip(tmp_path):
    path = write(tmp_path / "a.idx", idx_bytes(np.zeros((2, 3), np.uint8)))
    with pytest.raises(IdxError, match="2 dimensions, expected 3"):
        read_idx(path, ndim=3)
    with pytest.raises(IdxError, match="element type 0x08, expected 0x0c"):
        read_idx(path, dtype_code=0x0C)
    with pytest.raises(IdxError, match="no such file"):
        read_idx(tmp_path / "missing.idx")
    z = gzip.compress(idx_bytes(np.zeros((50, 50), np.uint8)))
    with pytest.raises(IdxError, match="gzip data is corrupt or truncated"):
        read_idx(write(tmp_path / "cut.gz", z[:len(z) // 2]))


# --- load_fashion_mnist on a small fake folder -------------------------------------------

def fake_fashion(root, n_train=12, n_test=6, gz=True, labels=None, hw=(28, 28)):
    root.mkdir(exist_ok=True)
    ext = ".gz" if gz else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        write(root / f"{split}-images-idx3-ubyte{ext}", idx_bytes(RNG.integers(0, 256, (n,) + hw).astype(np.uint8)), gz)
        lab = RNG.integers(0, 10, n).astype(np.uint8) if labels is None else labels[split][:n]
        write(root / f"{split}-labels-idx1-ubyte{ext}", idx_bytes(np.asarray(lab, np.uint8)), gz)
    return root


@pytest.mark.parametrize("gz", [False, True])
def test_fashion_loader_on_small_files(tmp_path, gz):
    root = fake_fashion(tmp_path / "fm", gz=gz)
    f = load_fashion_mnist(root, counts={"train": 12, "test": 6})
    assert f.X_train.shape == (12, 28, 28) and f.X_test.shape == (6, 28, 28)
    assert f.y_train.shape == (12,) and f.y_train.max() < 10


def test_fashion_loader_errors(tmp_path):
    root = fake_fashion(tmp_path / "fm")
    with pytest.raises(IdxError, match="12 train images, expected 60000.*not the published"):
        load_fashion_mnist(root)                                   # the real counts are required by default
    bad = fake_fashion(tmp_path / "lab", labels={"train": [0] * 11 + [10], "t10k": [0] * 6})
    with pytest.raises(IdxError, match=r"label 10 at index 11 is out of range 0..9"):
        load_fashion_mnist(bad, counts={"train": None, "test": None})
    small = fake_fashion(tmp_path / "hw", hw=(8, 8))
    with pytest.raises(IdxError, match="images are 8x8, expected 28x28"):
        load_fashion_mnist(small, counts={"train": None, "test": None})
    mism = fake_fashion(tmp_path / "mm")
    write(mism / "t10k-labels-idx1-ubyte.gz", idx_bytes(np.zeros(5, np.uint8)), gz=True)
    with pytest.raises(IdxError, match="5 labels for 6 images"):
        load_fashion_mnist(mism, counts={"train": None, "test": None})
    (root / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(IdxError) as e:
        load_fashion_mnist(root, counts={"train": None, "test": None})
    msg = str(e.value)
    assert "t10k-images-idx3-ubyte" in msg and f"apt-get install {FASHION_MNIST_PACKAGE}" in msg
    assert isinstance(e.value, InputError)


def test_fashion_loader_missing_folder_names_package(tmp_path):
    with pytest.raises(IdxError, match=f"no such file; install the data set with `apt-get install "
                                       f"{FASHION_MNIST_PACKAGE}`"):
        load_fashion_mnist(tmp_path / "nowhere")


# --- load_dataset ------------------------------------------------------------------------

def test_load_dataset_digits_is_the_default():
    d = load_dataset()
    assert d.name == "digits" and d.input_shape == (1, 8, 8)
    assert d.X_train.shape == (1437, 64) and d.X_test.shape == (360, 64) and d.y_test.dtype == np.int64


def test_load_dataset_fashion_mnist_installed():
    """The Debian package (installed by `make deps`): the published shapes, counts and label range."""
    full = load_fashion_mnist()
    assert full.X_train.shape == (60000, 28, 28) and full.X_test.shape == (10000, 28, 28)
    assert np.array_equal(np.bincount(full.y_test, minlength=10), np.full(10, 1000))
    d = load_dataset("fashion-mnist", train_samples=100, test_samples=50)
    assert d.input_shape == (1, 28, 28) == DATASET_INPUT_SHAPES["fashion-mnist"]
    assert d.X_train.shape == (100, 784) and d.X_test.shape == (50, 784) and d.X_train.dtype == np.float32
    assert 0 <= d.X_train.min() and d.X_train.max() <= 255 and d.y_train.dtype == np.int64


@pytest.mark.parametrize("kw,match", [({"name": "mnist"}, "unknown data set 'mnist'; valid: digits, fashion-mnist"),
                                      ({"train_samples": 0}, "train_samples must be a positive integer")])
def test_load_dataset_bad_arguments(kw, match):
    with pytest.raises(InputError, match=match):
        load_dataset(**kw)


def test_model_dataset_and_check():
    assert model_dataset({"data": "fashion-mnist"}, (1, 8, 8)) == "fashion-mnist"   # provenance wins
    assert model_dataset({"spec": {"data": "digits"}}, None) == "digits"
    assert model_dataset({}, (1, 28, 28)) == "fashion-mnist" and model_dataset({}, (64,)) == "digits"
    assert model_dataset({}, (3, 32, 32)) is None
    assert check_model_dataset("digits", None, "m") == "digits"
    assert check_model_dataset(None, "fashion-mnist", "m") == "fashion-mnist"
    with pytest.raises(InputError, match="m: the model was trained on digits, not fashion-mnist; run it with --data digits"):
        check_model_dataset("digits", "fashion-mnist", "m")
    with pytest.raises(InputError, match="cannot tell which data set"):
        check_model_dataset(None, None, "m")


# --- zoo models at 28x28 ------------------------------------------------------------------

@pytest.mark.parametrize("name,weights", [("cnn", None), ("resnet8", None)])
def test_zoo_models_take_28x28(name, weights):
    m = zoo.build_model(name, 4, 4, "post", "asq", edge_weight_quant="post", input_shape=(1, 28, 28)).eval()
    assert m.input_shape == (1, 28, 28)
    x = torch.rand(3, 784) * 255
    assert m(x).shape == (3, 10) and m(x.reshape(3, 1, 28, 28)).shape == (3, 10)
    shapes = zoo.layer_shapes(m)
    assert shapes[0].in_hw == (28, 28)
    if name == "cnn":                                   # 28 -> 14 -> 7 after the two max pools
        assert shapes[-1].in_ch == 64 * 7 * 7
    d8 = zoo.build_model(name, 4, 4, "post", "asq", edge_weight_quant="post")
    assert d8.input_shape == (1, 8, 8)                  # the digits default is unchanged


@pytest.mark.parametrize("name,shape,match", [("cnn", (1, 30, 30), "multiple of 4"), ("cnn", (3, 28, 28), r"\(1, H, H\)"),
                                              ("resnet20", (1, 28, 28), "fixed input shape"),
                                              ("mlp", (1, 28, 28), r"\(features,\)")])
def test_zoo_bad_input_shape(name, shape, match):
    with pytest.raises(ValueError, match=match):
        zoo.build_model(name, 4, 4, "fp", "fp", input_shape=shape)


# --- CLI: train on a Fashion-MNIST subset, the beta report, refusing the other data set ------------

def test_train_fashion_subset_betas_and_refusals(tmp_path):
    ckpt = tmp_path / "f.ckpt.safetensors"
    p = cli("train", "--data", "fashion-mnist", "--train-samples", "128", "--test-samples", "200", "--model", "cnn", "--weight-quant", "post",
            "--act-quant", "asq", "--edge-weight-quant", "post", "--epochs", "1", "--fp-epochs", "1",
            "--out", ckpt, "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["data"] == "fashion-mnist" and r["n_train"] == 128 and r["n_test"] == 200
    assert 0.1 < r["float_test_accuracy"] <= 1.0            # better than chance after two passes over 128 images
    from golden.train_zoo import load_checkpoint
    model, spec, _ = load_checkpoint(ckpt)
    assert spec.data == "fashion-mnist" and model.input_shape == (1, 28, 28)

    p = cli("betas", ckpt, "--samples", "40", "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["data"] == "fashion-mnist" and r["samples"] == 40
    assert [q["stage"] for q in r["quantizers"]] == ["features.3", "features.7"]     # the two 4-bit ASQ inputs
    for q in r["quantizers"]:
        assert sum(h["count"] for h in q["histogram"]) == 40 == q["samples"]
        assert q["distinct"] == len(q["histogram"]) >= 1 and 0 < q["min"] <= q["mean"] <= q["max"] < 2

    assert_clean_error(cli("betas", ckpt, "--data", "digits"), "trained on fashion-mnist, not digits",
                       "--data fashion-mnist")
    model_file = tmp_path / "f.model.safetensors"
    from golden.graphfile import load_graph, save_graph
    from golden.intdag import export_dag
    save_graph(export_dag(model), model_file, provenance={"spec": spec.to_dict(), "data": spec.data})
    assert load_graph(model_file).provenance["data"] == "fashion-mnist"
    # refused before any simulator is built
    assert_clean_error(cli("simulate", model_file, "--data", "digits", "--samples", "2"),
                       "trained on fashion-mnist, not digits")


def test_betas_refuses_models_without_asq(tmp_path, trained_model_path):
    assert_clean_error(cli("betas", trained_model_path), "no ASQ activation quantizer", "--act-quant asq")
    assert_clean_error(cli("betas", tmp_path / "none.safetensors"), "no such file")
