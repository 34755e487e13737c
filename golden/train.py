"""Quantization-aware training of :class:`golden.models.QuantMLP` on the digits set, and checkpoints.

Training is seeded and deterministic on CPU: ``torch.manual_seed``,
``torch.use_deterministic_algorithms(True)`` (restored afterwards) and a dedicated
``torch.Generator`` for shuffling. Optional float warm-up (``fp_epochs``, quantizers off), then
``epochs`` of QAT (quantizers initialised from the first QAT batch). SGD with momentum, cosine
learning rate per iteration (``CosineAnnealingLR``); weight decay applies to weights and biases
only, never to steps or alphas.

Checkpoints are safetensors files (never pickle): the model's ``state_dict`` tensors plus
``__metadata__["post_accel_checkpoint"]`` = JSON ``{"format": "post-accel-checkpoint",
"version": 1, "config": {...}, "metrics": {...}}``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

from . import arith
from .data import N_CLASSES, N_FEATURES, load_digits_split
from .models import QuantMLP
from .errors import InputError

__all__ = ["TrainConfig", "train", "evaluate", "save_checkpoint", "load_checkpoint", "CheckpointError",
           "CHECKPOINT_KEY", "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION"]

CHECKPOINT_KEY = "post_accel_checkpoint"
CHECKPOINT_FORMAT = "post-accel-checkpoint"
CHECKPOINT_VERSION = 1


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (all JSON-serialisable).

    ``epochs`` counts QAT epochs; ``fp_epochs`` float warm-up epochs run before them.
    """

    seed: int = 0
    epochs: int = 40
    fp_epochs: int = 10
    batch_size: int = 64
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    wbits: int = 4
    abits: int = 4
    edge_bits: int = 8
    hidden: tuple = (64, 32)

    def __post_init__(self):
        self.hidden = tuple(int(h) for h in self.hidden)
        for name in ("seed", "epochs", "fp_epochs", "batch_size", "wbits", "abits", "edge_bits"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"TrainConfig.{name} must be an integer, got {v!r}")
            setattr(self, name, int(v))
        if self.epochs < 1 or self.fp_epochs < 0 or self.batch_size < 1 or self.seed < 0:
            raise ValueError(f"TrainConfig needs epochs >= 1, fp_epochs >= 0, batch_size >= 1, seed >= 0; "
                             f"got epochs={self.epochs}, fp_epochs={self.fp_epochs}, "
                             f"batch_size={self.batch_size}, seed={self.seed}")
        for name in ("lr", "momentum", "weight_decay"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"TrainConfig.{name} must be a finite number >= 0, got {v!r}")
            setattr(self, name, float(v))
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ValueError(f"TrainConfig.hidden must be a non-empty tuple of positive widths, got {self.hidden!r}")
        arith.check_wbits(self.wbits)
        arith.check_abits(self.abits)
        arith.check_wbits(self.edge_bits)
        arith.check_abits(self.edge_bits)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}")
        return cls(**d)


def build_model(config: TrainConfig) -> QuantMLP:
    """A fresh (untrained) :class:`QuantMLP` for ``config`` on the digits shapes."""
    return QuantMLP(features=N_FEATURES, hidden=config.hidden, classes=N_CLASSES,
                    wbits=config.wbits, abits=config.abits, edge_bits=config.edge_bits)


@torch.no_grad()
def evaluate(model: QuantMLP, X, y) -> float:
    """Accuracy (fraction in [0, 1]) of ``model`` in eval mode on float features ``X`` / labels ``y``."""
    was_training = model.training
    model.eval()
    try:
        logits = model(torch.as_tensor(X, dtype=torch.float32))
    finally:
        model.train(was_training)
    return float((logits.argmax(dim=1) == torch.as_tensor(y)).double().mean())


def _param_groups(model: QuantMLP, weight_decay: float):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if name.endswith((".step", ".alpha")) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def _run_phase(model, X, y, config, epochs, gen, bar, phase):
    """``epochs`` epochs of SGD + per-iteration cosine LR; returns the last epoch's mean loss."""
    n = X.shape[0]
    n_batches = math.ceil(n / config.batch_size)
    opt = torch.optim.SGD(_param_groups(model, config.weight_decay), lr=config.lr,
                          momentum=config.momentum)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * n_batches)
    loss_mean = float("nan")
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for b in range(n_batches):
            idx = perm[b * config.batch_size:(b + 1) * config.batch_size]
            loss = F.cross_entropy(model(X[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * idx.numel()
        loss_mean = total / n
        if not math.isfinite(loss_mean):
            raise FloatingPointError(f"training diverged in the {phase} phase (loss {loss_mean}); lower lr")
        if bar is not None:
            bar.set_postfix(phase=phase, loss=f"{loss_mean:.4f}")
            bar.update(1)
    return loss_mean


def train(config: TrainConfig | None = None, progress: bool = True):
    """Train a :class:`QuantMLP` on the digits split with QAT.

    Returns
    -------
    model : QuantMLP
        In eval mode, quantization enabled, all quantizers initialised.
    metrics : dict
        ``float_train_accuracy`` / ``float_test_accuracy`` (fake-quantized float model),
        ``fp_test_accuracy`` (after the float warm-up, None without one), ``final_loss``,
        ``train_seconds``, ``n_train``, ``n_test``.
    """
    config = TrainConfig() if config is None else config
    X_train, y_train, X_test, y_test = load_digits_split()
    X = torch.from_numpy(X_train)
    y = torch.from_numpy(y_train)
    prev_det = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    t0 = time.perf_counter()
    bar = None
    try:
        torch.manual_seed(config.seed)
        gen = torch.Generator().manual_seed(config.seed)
        model = build_model(config)
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=config.fp_epochs + config.epochs, desc="train", unit="epoch")
        fp_acc = None
        if config.fp_epochs > 0:
            model.quant_enabled = False
            _run_phase(model, X, y, config, config.fp_epochs, gen, bar, "float")
            fp_acc = evaluate(model, X_test, y_test)
        model.quant_enabled = True
        loss = _run_phase(model, X, y, config, config.epochs, gen, bar, "qat")
    finally:
        if bar is not None:
            bar.close()
        torch.use_deterministic_algorithms(prev_det)
    model.eval()
    metrics = {
        "float_train_accuracy": evaluate(model, X_train, y_train),
        "float_test_accuracy": evaluate(model, X_test, y_test),
        "fp_test_accuracy": fp_acc,
        "final_loss": loss,
        "train_seconds": time.perf_counter() - t0,
        "n_train": int(X_train.shape[0]),
        "n_test": int(X_test.shape[0]),
    }
    return model, metrics


# --- checkpoints -------------------------------------------------------------

class CheckpointError(InputError):
    """A checkpoint file is missing, unreadable, foreign or inconsistent (one-line message)."""


def save_checkpoint(model: QuantMLP, config: TrainConfig, metrics: dict, path) -> None:
    """Write ``model``'s state_dict and ``config``/``metrics`` to a safetensors file at ``path``."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    for k, v in tensors.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise CheckpointError(f"{os.fspath(path)}: refusing to save, tensor {k!r} has NaN or inf")
    meta = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            "config": config.to_dict(), "metrics": dict(metrics or {})}
    save_file(tensors, os.fspath(path), metadata={CHECKPOINT_KEY: json.dumps(meta)})


def _ckpt_fail(path, what: str):
    raise CheckpointError(f"{path}: {what}")


def load_checkpoint(path):
    """Rebuild the model saved by :func:`save_checkpoint`.

    Returns ``(model, config, metrics)``; the model is in eval mode. Raises
    :class:`CheckpointError` (a ``ValueError``, one-line message naming the file) if the file
    is missing, not a safetensors file, truncated, not a post-accel checkpoint, or its tensors
    do not match the configured model.
    """
    from safetensors import safe_open

    p = os.fspath(path)
    if not os.path.exists(p):
        _ckpt_fail(p, "no such file; train a model first (post-accel train)")
    if not os.path.isfile(p):
        _ckpt_fail(p, "is not a regular file; pass the checkpoint .safetensors file")
    try:
        with safe_open(p, framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types on bad headers / short files
        _ckpt_fail(p, f"not a readable safetensors file (truncated or corrupt?): "
                      f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    if CHECKPOINT_KEY not in meta:
        hint = " (it is an exported integer model; load it with golden.intmodel.load_intmodel)" \
            if "post_accel" in meta else ""
        _ckpt_fail(p, f"no '{CHECKPOINT_KEY}' metadata, not a post-accel training checkpoint{hint}")
    try:
        info = json.loads(meta[CHECKPOINT_KEY])
    except json.JSONDecodeError as exc:
        _ckpt_fail(p, f"checkpoint metadata is not valid JSON ({exc.msg} at position {exc.pos})")
    if not isinstance(info, dict) or info.get("format") != CHECKPOINT_FORMAT:
        _ckpt_fail(p, f"checkpoint metadata format tag is not '{CHECKPOINT_FORMAT}'")
    if info.get("version") != CHECKPOINT_VERSION:
        _ckpt_fail(p, f"checkpoint version {info.get('version')!r} is not supported "
                      f"(expected {CHECKPOINT_VERSION}); retrain with this version")
    try:
        config = TrainConfig.from_dict(info.get("config"))
    except (TypeError, ValueError) as exc:
        _ckpt_fail(p, f"invalid training config in checkpoint: {str(exc).splitlines()[0]}")
    metrics = info.get("metrics")
    if not isinstance(metrics, dict):
        _ckpt_fail(p, "checkpoint metrics are not a JSON object")
    model = build_model(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        _ckpt_fail(p, f"tensors do not match the configured model (missing {missing[:3]}, unexpected {extra[:3]})")
    for k, v in expected.items():
        if tensors[k].shape != v.shape or tensors[k].dtype != v.dtype:
            _ckpt_fail(p, f"tensor {k!r} has shape {tuple(tensors[k].shape)} dtype {tensors[k].dtype}, "
                          f"expected {tuple(v.shape)} {v.dtype}")
    model.load_state_dict(tensors, strict=True)
    model.eval()
    return model, config, metrics
