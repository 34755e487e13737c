"""Shared fixtures: quickly trained and exported digits models (MLP, CNN, ResNet-8) per test session.

The model is trained for real (QAT on scikit-learn's digits, a few epochs, fixed seed) and cached
under build/test-cache keyed by its configuration, so parallel workers and later runs reuse it.
"""

import fcntl
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "build" / "test-cache"
MLP_QUICK = {"model": "mlp", "weight_quant": "post", "act_quant": "lsq", "edge_weight_quant": "post",
             "wbits": 4, "abits": 4, "seed": 0, "epochs": 4, "fp_epochs": 4}


def _export(spec, model, metrics, path) -> None:
    """The one export: golden.intdag.export_dag -> golden.graphfile.save_graph (post-accel-intgraph, the
    current version)."""
    from golden.graphfile import save_graph
    from golden.intdag import export_dag

    model.eval()
    save_graph(export_dag(model), path, provenance={"spec": spec.to_dict(), "metrics": metrics})


def _format_version() -> int:
    """The model file version: cached exports of an older arithmetic are not reused."""
    from golden.modelfile import MODEL_VERSION
    return MODEL_VERSION


def _trained_zoo_paths(quick: dict) -> tuple[Path, Path]:
    """(checkpoint, exported model) of the zoo model ``quick`` describes, trained once and cached."""
    from golden.train_zoo import TrainSpec, save_checkpoint, train_spec

    CACHE.mkdir(parents=True, exist_ok=True)
    key = "-".join(f"{k}{v}" for k, v in quick.items()) + f"-v{_format_version()}"
    ckpt, model_path = CACHE / f"{key}.ckpt.safetensors", CACHE / f"{key}.model.safetensors"
    with open(CACHE / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not model_path.exists():
            spec = TrainSpec(**quick)
            model, metrics = train_spec(spec, progress=False, integer=False)
            save_checkpoint(model, spec, metrics, ckpt)
            _export(spec, model, metrics, model_path)
    return ckpt, model_path


@pytest.fixture(scope="session")
def trained_model_path() -> Path:
    """Path of an exported, trained W4A4 digits MLP (POST weights everywhere, 8-bit first/last layers,
    LSQ activations): the zoo MLP in the one format."""
    return _trained_zoo_paths(MLP_QUICK)[1]


@pytest.fixture(scope="session")
def trained_checkpoint_path(trained_model_path) -> Path:
    """Its training checkpoint (golden.train_zoo)."""
    return _trained_zoo_paths(MLP_QUICK)[0]


@pytest.fixture(scope="session")
def trained_model(trained_model_path):
    """The trained digits MLP as an integer graph."""
    from golden.graphfile import load_graph
    return load_graph(trained_model_path)


@pytest.fixture(scope="session")
def digits_codes(trained_model):
    """(input codes of the stage reading the network input, labels) of the digits test set."""
    from golden.data import load_digits_split
    from golden.intdag import run_graph
    _, _, x_test, y_test = load_digits_split()
    run = run_graph(trained_model, x_test)
    first = next(k for k, st in enumerate(trained_model.stages) if st.input_from == "input")
    return np.asarray(run.codes[first]).reshape(len(x_test), -1), y_test


CNN_QUICK = {"model": "cnn", "weight_quant": "post", "act_quant": "asq", "edge_weight_quant": "post",
             "wbits": 4, "abits": 4, "seed": 0, "epochs": 6, "fp_epochs": 6}


def _trained_cnn_paths() -> tuple[Path, Path]:
    return _trained_zoo_paths(CNN_QUICK)


RESNET8_QUICK = {"model": "resnet8", "weight_quant": "post", "act_quant": "asq", "edge_weight_quant": "post",
                 "wbits": 4, "abits": 4, "seed": 0, "epochs": 4, "fp_epochs": 4}


def _trained_resnet8_path() -> Path:
    from golden.train_zoo import TrainSpec, train_spec

    CACHE.mkdir(parents=True, exist_ok=True)
    key = "-".join(f"{k}{v}" for k, v in RESNET8_QUICK.items()) + f"-v{_format_version()}"
    model_path = CACHE / f"{key}.model.safetensors"
    with open(CACHE / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not model_path.exists():
            spec = TrainSpec(**RESNET8_QUICK)
            model, metrics = train_spec(spec, progress=False, integer=False)
            _export(spec, model, metrics, model_path)
    return model_path


@pytest.fixture(scope="session")
def trained_resnet8_path() -> Path:
    return _trained_resnet8_path()


@pytest.fixture(scope="session")
def trained_resnet8():
    """A trained digits ResNet-8 (POST weights, ASQ activations; residual adds, 1x1 shortcut convs,
    global average pooling) exported as an integer graph."""
    from golden.graphfile import load_graph
    return load_graph(_trained_resnet8_path())


@pytest.fixture(scope="session")
def trained_cnn_path() -> Path:
    """Path of an exported (the one integer graph format), trained digits CNN: POST weights everywhere (8-bit edge
    layers), ASQ activations in the body — the engine's demo model, trained briefly."""
    return _trained_cnn_paths()[1]


@pytest.fixture(scope="session")
def trained_cnn(trained_cnn_path):
    from golden.graphfile import load_graph
    return load_graph(trained_cnn_path)
