"""Shared fixtures: one quickly trained and exported digits MLP per test session.

The model is trained for real (QAT on scikit-learn's digits, a few epochs, fixed seed) and cached
under build/test-cache keyed by its configuration, so parallel workers and later runs reuse it.
"""

import fcntl
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "build" / "test-cache"
QUICK = {"seed": 0, "epochs": 4, "wbits": 4, "abits": 4, "hidden": [64, 32]}


def _trained_model_path() -> Path:
    from golden.export import export_model
    from golden.intmodel import save_intmodel
    from golden.train import TrainConfig, save_checkpoint, train

    CACHE.mkdir(parents=True, exist_ok=True)
    key = "mlp-" + "-".join(f"{k}{v}" for k, v in QUICK.items()).replace(" ", "").replace(",", "_")
    ckpt, model_path = CACHE / f"{key}.ckpt.safetensors", CACHE / f"{key}.model.safetensors"
    with open(CACHE / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not model_path.exists():
            cfg = TrainConfig(seed=QUICK["seed"], epochs=QUICK["epochs"], wbits=QUICK["wbits"],
                              abits=QUICK["abits"], hidden=tuple(QUICK["hidden"]))
            model, metrics = train(cfg, progress=False)
            save_checkpoint(model, cfg, metrics, ckpt)
            save_intmodel(export_model(model, cfg, metrics), model_path)
            (CACHE / f"{key}.json").write_text(json.dumps(metrics))
    return model_path


@pytest.fixture(scope="session")
def trained_model_path() -> Path:
    """Path of an exported, trained W4A4 digits MLP (8-bit first/last layers)."""
    return _trained_model_path()


@pytest.fixture(scope="session")
def trained_checkpoint_path(trained_model_path) -> Path:
    return trained_model_path.with_name(trained_model_path.name.replace(".model.", ".ckpt."))


@pytest.fixture(scope="session")
def trained_model(trained_model_path):
    from golden.intmodel import load_intmodel
    return load_intmodel(trained_model_path)


@pytest.fixture(scope="session")
def digits_codes(trained_model):
    """(input codes, labels) of the digits test set for the trained model."""
    from golden import executor
    from golden.data import load_digits_split
    _, _, x_test, y_test = load_digits_split()
    return executor.quantize_input(trained_model, x_test), y_test


CNN_QUICK = {"model": "cnn", "weight_quant": "post", "act_quant": "asq", "edge_weight_quant": "post",
             "wbits": 4, "abits": 4, "seed": 0, "epochs": 6, "fp_epochs": 6}


def _trained_cnn_paths() -> tuple[Path, Path]:
    from golden.graphfile import save_graph
    from golden.intgraph import export_graph
    from golden.train_zoo import TrainSpec, save_checkpoint, train_spec

    CACHE.mkdir(parents=True, exist_ok=True)
    key = "cnn-" + "-".join(f"{k}{v}" for k, v in CNN_QUICK.items())
    ckpt, model_path = CACHE / f"{key}.ckpt.safetensors", CACHE / f"{key}.model.safetensors"
    with open(CACHE / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not model_path.exists():
            spec = TrainSpec(**CNN_QUICK)
            model, metrics = train_spec(spec, progress=False, integer=False)
            save_checkpoint(model, spec, metrics, ckpt)
            model.eval()
            save_graph(export_graph(model), model_path, provenance={"spec": spec.to_dict(), "metrics": metrics})
    return ckpt, model_path


RESNET8_QUICK = {"model": "resnet8", "weight_quant": "post", "act_quant": "asq", "edge_weight_quant": "post",
                 "wbits": 4, "abits": 4, "seed": 0, "epochs": 4, "fp_epochs": 4}


def _trained_resnet8_path() -> Path:
    from golden.graphfile import save_graph
    from golden.intdag import export_dag
    from golden.train_zoo import TrainSpec, train_spec

    CACHE.mkdir(parents=True, exist_ok=True)
    key = "-".join(f"{k}{v}" for k, v in RESNET8_QUICK.items())
    model_path = CACHE / f"{key}.model.safetensors"
    with open(CACHE / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not model_path.exists():
            spec = TrainSpec(**RESNET8_QUICK)
            model, metrics = train_spec(spec, progress=False, integer=False)
            save_graph(export_dag(model.eval()), model_path, provenance={"spec": spec.to_dict(), "metrics": metrics})
    return model_path


@pytest.fixture(scope="session")
def trained_resnet8_path() -> Path:
    return _trained_resnet8_path()


@pytest.fixture(scope="session")
def trained_resnet8():
    """A trained digits ResNet-8 (POST weights, ASQ activations; residual adds, 1x1 shortcut convs,
    global average pooling) exported as a DAG integer graph (file v3)."""
    from golden.graphfile import load_graph
    return load_graph(_trained_resnet8_path())


@pytest.fixture(scope="session")
def trained_cnn_path() -> Path:
    """Path of an exported (integer graph v2), trained digits CNN: POST weights everywhere (8-bit edge
    layers), ASQ activations in the body — the engine's demo model, trained briefly."""
    return _trained_cnn_paths()[1]


@pytest.fixture(scope="session")
def trained_cnn(trained_cnn_path):
    from golden.graphfile import load_graph
    return load_graph(trained_cnn_path)
