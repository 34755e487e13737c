"""Quantization-aware training of the digits models of :mod:`golden.zoo` with any registered quantizer.

One run is described by a :class:`TrainSpec` (plain, JSON-serialisable data) and executed by
:func:`train_spec`, which returns the trained model and a dict of metrics. The ablation
(``post-accel ablate``, ``bench/ablate.py``) runs many specs as independent jobs.

Schedule (the paper's, Sec. 4.1.2: "initialised from the pre-trained full-precision model", SGD,
cosine decay without restarts)
    1. *Float pre-training* (``fp_epochs``, may be 0): a full-precision copy of the model
       (``weight_quant = act_quant = "fp"``) is built under ``torch.manual_seed(seed)`` and trained
       with its own SGD + cosine schedule. Because it does not depend on the quantizers, every
       method trained with the same seed starts QAT from *the same* float network (a paired
       comparison: method differences are not mixed with initialisation noise).
    2. *QAT* (``epochs``): the quantized model is built (quantizer parameters such as ASQ adapters
       are drawn from ``torch.manual_seed(seed + 1)``), the float weights, biases and BN
       statistics are copied in, and it is trained with a fresh SGD + cosine schedule. The
       quantizers initialise their learned scales from the first QAT batch. Method ``"fp"``
       (both quantizers ``"fp"``) simply continues float training for ``epochs``.
    Both phases: SGD, momentum 0.9, weight decay on conv/linear/BN parameters only (never on
    quantizer parameters: steps, alphas, QIL intervals, ASQ adapters), cosine LR per iteration
    (``CosineAnnealingLR``, ``T_max`` = iterations of the phase), cross-entropy, no augmentation.
    Inputs are the raw 0..16 pixels of :func:`golden.data.load_digits_split` (as ``post-accel
    train``); the first conv's 8-bit quantizer and BN learn the scale.

Edge layers
    The first and last layer are ``edge_bits`` (8) bits, as in the paper. Their quantizers are
    ``edge_weight_quant`` / ``edge_act_quant``; ``None`` (default) means ``"uniform"`` / ``"lsq"``
    for a quantized body and ``"fp"`` for a float one. Keeping the edges the same for every method
    makes an ablation compare only the low-bit layers (and APoT has no 8-bit set at all).

Determinism
    Inside :func:`train_spec` torch runs single-threaded (``torch.set_num_threads(1)``) with
    ``torch.use_deterministic_algorithms(True)``; both are restored afterwards. Shuffling uses
    dedicated ``torch.Generator`` objects. The same spec therefore gives a bit-identical
    ``state_dict`` in this process, in a Dask worker, or on another scheduler order
    (``metrics["state_sha256"]`` is a hash of it).

Integer accuracy
    If :mod:`golden.intdag` is importable, ``integer_accuracy(model, X_test, y_test)`` is
    called on the trained model; a ``ValueError`` (a model or quantizer it cannot export) is
    recorded in ``metrics["integer_error"]`` and the accuracy is ``None``. Without the module
    both are ``None`` / ``"golden.intgraph not available"``.

Checkpoints
    :func:`save_checkpoint` writes a safetensors file (tensors only, never pickle) whose
    ``__metadata__["post_accel_zoo_checkpoint"]`` is JSON ``{"format", "version", "spec",
    "metrics"}``; :func:`load_checkpoint` rebuilds the model from the spec and loads it strictly.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import zoo
from .data import DATASET_INPUT_SHAPES, DATASETS, N_CLASSES, load_dataset
from .quant.registry import ACT_QUANTIZERS, WEIGHT_QUANTIZERS
from .errors import InputError
from .safeio import atomic_output

__all__ = ["TrainSpec", "train_spec", "build_spec_model", "evaluate", "state_digest", "check_spec_bits",
           "save_checkpoint", "load_checkpoint", "ZooCheckpointError", "DIGITS_MODELS",
           "CHECKPOINT_KEY", "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION"]

#: Models of :mod:`golden.zoo` that take the 8x8 digits.
DIGITS_MODELS = ("mlp", "cnn", "resnet8")

CHECKPOINT_KEY = "post_accel_zoo_checkpoint"
CHECKPOINT_FORMAT = "post-accel-zoo-checkpoint"
CHECKPOINT_VERSION = 1

#: Offset of the seed that draws the quantized model's own parameters (e.g. ASQ adapters).
_QUANT_SEED_OFFSET = 1
#: Offset of the seed of the QAT shuffling generator (the float phase uses ``seed``).
_QAT_SHUFFLE_OFFSET = 7919


def _is_int(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, np.integer))


@dataclass
class TrainSpec:
    """One training run (all fields JSON-serialisable).

    Attributes
    ----------
    model : str
        ``"cnn"`` or ``"mlp"`` (:data:`DIGITS_MODELS`).
    wbits, abits : int
        Weight / input-activation bits of every layer but the first and last. Ignored (but still
        recorded) by the ``"fp"`` quantizers.
    weight_quant, act_quant : str
        Names from :data:`golden.quant.registry.WEIGHT_QUANTIZERS` / ``ACT_QUANTIZERS``.
    seed : int
        Seeds the float model, the quantizer parameters and both shuffling generators.
    epochs : int
        QAT epochs (>= 1).
    fp_epochs : int
        Float pre-training epochs before QAT (>= 0).
    lr, momentum, weight_decay : float
        SGD hyper-parameters (same for both phases); the LR follows a cosine decay to 0.
    batch_size : int
        Mini-batch size.
    edge_bits : int
        Bits of the first and the last layer (weights and input activations).
    edge_weight_quant, edge_act_quant : str or None
        Quantizers of the edge layers; None = ``uniform`` / ``lsq`` (``fp`` for a float body).
    train_limit : int or None
        Train on the first ``train_limit`` samples of the training split only (tests, smoke
        runs); None = all (1437 digits, 60,000 Fashion-MNIST).
    data : str
        The data set (:data:`golden.data.DATASETS`): ``"digits"`` (default, 8x8) or
        ``"fashion-mnist"`` (28x28); it fixes the model's input shape.
    test_limit : int or None
        Evaluate on the first ``test_limit`` test samples only (quick runs); None = all.
    adapter_lr_scale : float
        Learning rate of the ASQ adapters' parameters relative to ``lr`` (default 10). An adapter
        must move ``z`` by more than the ``2**-ASQ_Z_FRAC`` grid step between samples before two
        samples get different betas; at ``lr`` alone the trained adapters stayed within one grid
        step (docs/quantizers.md, "Why the adapters collapsed").
    """

    model: str = "cnn"
    wbits: int = 4
    abits: int = 4
    weight_quant: str = "uniform"
    act_quant: str = "lsq"
    seed: int = 0
    epochs: int = 30
    fp_epochs: int = 15
    lr: float = 0.02
    batch_size: int = 64
    momentum: float = 0.9
    weight_decay: float = 1e-4
    edge_bits: int = 8
    edge_weight_quant: str | None = None
    edge_act_quant: str | None = None
    train_limit: int | None = None
    data: str = "digits"
    test_limit: int | None = None
    adapter_lr_scale: float = 10.0

    def __post_init__(self):
        if self.data not in DATASETS:
            raise ValueError(f"unknown data set {self.data!r}; valid: {', '.join(DATASETS)}")
        if self.model not in DIGITS_MODELS:
            valid = ", ".join(DIGITS_MODELS)
            other = " (the other zoo models are not digits models)" if self.model in zoo.MODEL_NAMES else ""
            raise ValueError(f"unknown model {self.model!r} for digits training; valid: {valid}{other}")
        for name in ("wbits", "abits", "seed", "epochs", "fp_epochs", "batch_size", "edge_bits"):
            v = getattr(self, name)
            if not _is_int(v):
                raise ValueError(f"TrainSpec.{name} must be an integer, got {v!r}")
            setattr(self, name, int(v))
        if self.epochs < 1 or self.fp_epochs < 0 or self.batch_size < 1 or self.seed < 0:
            raise ValueError(f"TrainSpec needs epochs >= 1, fp_epochs >= 0, batch_size >= 1, seed >= 0; got "
                             f"epochs={self.epochs}, fp_epochs={self.fp_epochs}, batch_size={self.batch_size}, "
                             f"seed={self.seed}")
        for name in ("lr", "momentum", "weight_decay", "adapter_lr_scale"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"TrainSpec.{name} must be a finite number >= 0, got {v!r}")
            setattr(self, name, float(v))
        for name in ("train_limit", "test_limit"):
            v = getattr(self, name)
            if v is not None:
                if not _is_int(v) or v < 1:
                    raise ValueError(f"TrainSpec.{name} must be a positive integer or None, got {v!r}")
                setattr(self, name, int(v))
        if self.lr <= 0:
            raise ValueError(f"TrainSpec.lr must be > 0, got {self.lr}")
        check_spec_bits(self)

    # quantizer names actually used on the edge layers
    @property
    def edge_weight(self) -> str:
        if self.edge_weight_quant is not None:
            return self.edge_weight_quant
        return "fp" if self.weight_quant == "fp" else "uniform"

    @property
    def edge_act(self) -> str:
        if self.edge_act_quant is not None:
            return self.edge_act_quant
        return "fp" if self.act_quant == "fp" else "lsq"

    @property
    def is_float(self) -> bool:
        """True when nothing is quantized (method ``fp``)."""
        return "fp" == self.weight_quant == self.act_quant == self.edge_weight == self.edge_act

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainSpec":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        if not isinstance(d, dict):
            raise ValueError(f"a TrainSpec must be a JSON object, got {type(d).__name__}")
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown TrainSpec fields {unknown}")
        return cls(**d)


def check_spec_bits(spec: TrainSpec) -> None:
    """Raise ``ValueError`` (naming the quantizer, the bits and the valid range) if any quantizer of
    ``spec`` is unknown or does not support its bit-width. Builds nothing."""
    for what, table, name, bits in (("weight", WEIGHT_QUANTIZERS, spec.weight_quant, spec.wbits),
                                    ("activation", ACT_QUANTIZERS, spec.act_quant, spec.abits),
                                    ("edge weight", WEIGHT_QUANTIZERS, spec.edge_weight, spec.edge_bits),
                                    ("edge activation", ACT_QUANTIZERS, spec.edge_act, spec.edge_bits)):
        if not isinstance(name, str) or name not in table:
            raise ValueError(f"unknown {what} quantizer {name!r}; valid: {', '.join(table)}")
        try:
            table[name].check_bits(bits)
        except ValueError as exc:
            raise ValueError(f"{what} quantizer {name!r} does not support {bits} bits: {exc}") from None


def build_spec_model(spec: TrainSpec, *, float_model: bool = False) -> nn.Module:
    """The (untrained) model of ``spec``; ``float_model=True`` gives its full-precision twin."""
    shape = _spec_input_shape(spec)
    if float_model:
        return zoo.build_model(spec.model, spec.wbits, spec.abits, "fp", "fp", N_CLASSES,
                               edge_bits=spec.edge_bits, edge_weight_quant="fp", edge_act_quant="fp",
                               input_shape=shape)
    return zoo.build_model(spec.model, spec.wbits, spec.abits, spec.weight_quant, spec.act_quant, N_CLASSES,
                           edge_bits=spec.edge_bits, edge_weight_quant=spec.edge_weight,
                           edge_act_quant=spec.edge_act, input_shape=shape)


def _spec_input_shape(spec: TrainSpec) -> tuple:
    """The model input shape of ``spec``'s data set: ``(features,)`` for the MLP, ``(1, H, W)`` otherwise."""
    shape = DATASET_INPUT_SHAPES[spec.data]
    return (int(np.prod(shape)),) if spec.model == "mlp" else shape


def _is_quantizer_param(name: str) -> bool:
    return ".weight_quant." in name or ".act_quant." in name


def _param_groups(model: nn.Module, weight_decay: float, lr: float, adapter_lr_scale: float = 1.0):
    """SGD groups: weights (decayed), quantizer parameters (not decayed), ASQ adapters (not decayed,
    ``lr * adapter_lr_scale``)."""
    decay, no_decay, adapters = [], [], []
    for name, p in model.named_parameters():
        if ".act_quant.adapter." in name:
            adapters.append(p)
        else:
            (no_decay if _is_quantizer_param(name) else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    if adapters:
        groups.append({"params": adapters, "weight_decay": 0.0, "lr": lr * adapter_lr_scale})
    return groups


@torch.no_grad()
def evaluate(model: nn.Module, X, y, batch_size: int = 512) -> float:
    """Accuracy (fraction in [0, 1]) of ``model`` in eval mode on features ``X`` / labels ``y``."""
    was_training = model.training
    model.eval()
    X = torch.as_tensor(X, dtype=torch.float32)
    y = torch.as_tensor(y)
    correct = 0
    try:
        for i in range(0, X.shape[0], batch_size):
            correct += int((model(X[i:i + batch_size]).argmax(dim=1) == y[i:i + batch_size]).sum())
    finally:
        model.train(was_training)
    return correct / max(1, int(X.shape[0]))


def state_digest(model: nn.Module) -> str:
    """SHA-256 of the ``state_dict`` (names, dtypes, shapes and bytes, in key order)."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        t = v.detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def _run_phase(model, X, y, spec: TrainSpec, epochs: int, gen: torch.Generator, bar, phase: str) -> float:
    """``epochs`` epochs of SGD with a per-iteration cosine LR; returns the last epoch's mean loss."""
    n = X.shape[0]
    n_batches = math.ceil(n / spec.batch_size)
    opt = torch.optim.SGD(_param_groups(model, spec.weight_decay, spec.lr, spec.adapter_lr_scale), lr=spec.lr,
                          momentum=spec.momentum)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * n_batches)
    loss_mean = float("nan")
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for b in range(n_batches):
            idx = perm[b * spec.batch_size:(b + 1) * spec.batch_size]
            loss = F.cross_entropy(model(X[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * idx.numel()
        loss_mean = total / n
        if not math.isfinite(loss_mean):
            raise FloatingPointError(f"{spec.weight_quant}/{spec.act_quant} W{spec.wbits}A{spec.abits} seed "
                                     f"{spec.seed}: training diverged in the {phase} phase, epoch {epoch + 1} "
                                     f"(loss {loss_mean}); lower lr")
        if bar is not None:
            bar.set_postfix(phase=phase, loss=f"{loss_mean:.4f}")
            bar.update(1)
    return loss_mean


def _copy_float_weights(src: nn.Module, dst: nn.Module) -> None:
    """Copy every non-quantizer tensor (conv/linear weights, biases, BN) of ``src`` into ``dst``."""
    state = {k: v for k, v in src.state_dict().items() if not _is_quantizer_param(k)}
    missing, unexpected = dst.load_state_dict(state, strict=False)
    bad = [k for k in missing if not _is_quantizer_param(k)]
    if bad or unexpected:         # pragma: no cover - the two models come from the same definition
        raise RuntimeError(f"float and quantized models differ: missing {bad[:3]}, unexpected {unexpected[:3]}")


def integer_accuracy_or_none(model: nn.Module, X_test, y_test) -> tuple[float | None, str | None]:
    """``golden.intdag.integer_accuracy`` if available: ``(accuracy, None)`` or ``(None, reason)``."""
    try:
        from .intdag import integer_accuracy
    except ImportError:
        return None, "golden.intgraph not available"
    try:
        return float(integer_accuracy(model, X_test, y_test)), None
    except (ValueError, NotImplementedError) as exc:
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def train_spec(spec: TrainSpec, progress: bool = False, *, integer: bool = True):
    """Train the model of ``spec`` on its data set's split (see the module docstring for the schedule).

    Parameters
    ----------
    spec : TrainSpec
        What to train.
    progress : bool
        Show a tqdm bar (one step per epoch) on stderr.
    integer : bool
        Also measure the integer accuracy through :mod:`golden.intgraph` (when it exists).

    Returns
    -------
    model : nn.Module
        In eval mode, quantization enabled, quantizers initialised.
    metrics : dict
        ``float_test_accuracy`` / ``float_train_accuracy`` (the fake-quantized float model),
        ``fp_test_accuracy`` (after float pre-training; None without it), ``integer_test_accuracy``
        and ``integer_error`` (see the module docstring), ``final_loss``, ``seconds`` (wall time
        of the whole call), ``state_sha256`` (:func:`state_digest`), ``n_train``, ``n_test``.
    """
    if not isinstance(spec, TrainSpec):
        raise TypeError(f"train_spec needs a TrainSpec, got {type(spec).__name__}")
    t0 = time.perf_counter()
    X_train, y_train, X_test, y_test = load_dataset(spec.data, train_samples=spec.train_limit,
                                                     test_samples=spec.test_limit).split()
    X = torch.from_numpy(X_train)
    y = torch.from_numpy(y_train)
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_threads = torch.get_num_threads()
    bar = None
    try:
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
        if progress:
            import sys

            from tqdm import tqdm
            bar = tqdm(total=spec.fp_epochs + spec.epochs, unit="epoch", file=sys.stderr,
                       desc=f"{spec.model} {spec.weight_quant}/{spec.act_quant} W{spec.wbits}A{spec.abits} "
                            f"s{spec.seed}")
        fp_acc = None
        torch.manual_seed(spec.seed)
        if spec.fp_epochs > 0:
            fmodel = build_spec_model(spec, float_model=True)
            _run_phase(fmodel, X, y, spec, spec.fp_epochs, torch.Generator().manual_seed(spec.seed), bar, "float")
            fp_acc = evaluate(fmodel, X_test, y_test)
            torch.manual_seed(spec.seed + _QUANT_SEED_OFFSET)
            model = build_spec_model(spec)
            _copy_float_weights(fmodel, model)
            del fmodel
        else:
            model = build_spec_model(spec)
        zoo.set_quantization(model, True)
        gen = torch.Generator().manual_seed(spec.seed + _QAT_SHUFFLE_OFFSET)
        loss = _run_phase(model, X, y, spec, spec.epochs, gen, bar, "float" if spec.is_float else "qat")
        model.eval()
        metrics = {
            "float_test_accuracy": evaluate(model, X_test, y_test),
            "float_train_accuracy": evaluate(model, X_train, y_train),
            "fp_test_accuracy": fp_acc,
            "final_loss": loss,
        }
        if integer:
            metrics["integer_test_accuracy"], metrics["integer_error"] = integer_accuracy_or_none(
                model, X_test, y_test)
        else:
            metrics["integer_test_accuracy"], metrics["integer_error"] = None, "not requested"
        metrics["state_sha256"] = state_digest(model)
    finally:
        if bar is not None:
            bar.close()
        torch.use_deterministic_algorithms(prev_det)
        torch.set_num_threads(prev_threads)
    metrics.update(seconds=time.perf_counter() - t0, n_train=int(X_train.shape[0]), n_test=int(X_test.shape[0]))
    return model, metrics


# --- checkpoints -----------------------------------------------------------------

class ZooCheckpointError(InputError):
    """A zoo checkpoint is missing, unreadable, foreign or inconsistent (one-line message)."""


def _json_safe(obj):
    """``obj`` with non-finite floats replaced by None (strict JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def save_checkpoint(model: nn.Module, spec: TrainSpec, metrics: dict | None, path, what: str = "checkpoint") -> None:
    """Write ``model``'s state_dict (safetensors) with ``spec`` and ``metrics`` as JSON metadata, atomically
    (:func:`golden.safeio.atomic_output`; ``what`` names the path in errors, e.g. ``"--out"``)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    for k, v in tensors.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise ZooCheckpointError(f"{os.fspath(path)}: refusing to save, tensor {k!r} has NaN or inf")
    meta = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "spec": spec.to_dict(),
            "metrics": _json_safe(dict(metrics or {}))}
    with atomic_output(path, what) as tmp:
        save_file(tensors, os.fspath(tmp), metadata={CHECKPOINT_KEY: json.dumps(meta, allow_nan=False)})


#: Largest checkpoint JSON header (characters) :func:`load_checkpoint` reads.
_MAX_META_CHARS = 1 << 22


def load_checkpoint(path):
    """Rebuild the model saved by :func:`save_checkpoint`: ``(model, spec, metrics)``, model in eval mode.

    Raises :class:`ZooCheckpointError` (a ``ValueError``, naming the file) for a missing, unreadable
    or foreign file, or tensors that do not match the model the spec describes.
    """
    from safetensors import safe_open

    p = os.fspath(path)
    if not os.path.exists(p):
        raise ZooCheckpointError(f"{p}: no such file")
    if not os.path.isfile(p):                              # a directory, FIFO or device (reading could block)
        raise ZooCheckpointError(f"{p}: not a regular file; pass the checkpoint file itself")
    try:
        with safe_open(p, framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors has its own error types for bad headers / short files
        raise ZooCheckpointError(f"{p}: not a readable safetensors file ({type(exc).__name__})") from None
    if CHECKPOINT_KEY not in meta:
        raise ZooCheckpointError(f"{p}: no '{CHECKPOINT_KEY}' metadata, not a zoo training checkpoint")
    if len(meta[CHECKPOINT_KEY]) > _MAX_META_CHARS:
        raise ZooCheckpointError(f"{p}: checkpoint metadata is {len(meta[CHECKPOINT_KEY])} characters, more than "
                                 f"the {_MAX_META_CHARS} a checkpoint header may have")
    try:
        info = json.loads(meta[CHECKPOINT_KEY])
    except RecursionError:
        raise ZooCheckpointError(f"{p}: checkpoint metadata is nested too deeply to be a checkpoint's") from None
    except json.JSONDecodeError as exc:
        raise ZooCheckpointError(f"{p}: checkpoint metadata is not valid JSON ({exc.msg})") from None
    if not isinstance(info, dict) or info.get("format") != CHECKPOINT_FORMAT:
        raise ZooCheckpointError(f"{p}: checkpoint format tag is not '{CHECKPOINT_FORMAT}'")
    if info.get("version") != CHECKPOINT_VERSION:
        raise ZooCheckpointError(f"{p}: checkpoint version {info.get('version')!r} is not supported "
                                 f"(expected {CHECKPOINT_VERSION})")
    try:
        spec = TrainSpec.from_dict(info.get("spec"))
    except (TypeError, ValueError) as exc:
        raise ZooCheckpointError(f"{p}: invalid spec in checkpoint: {str(exc).splitlines()[0]}") from None
    metrics = info.get("metrics")
    if not isinstance(metrics, dict):
        raise ZooCheckpointError(f"{p}: checkpoint metrics are not a JSON object")
    model = build_spec_model(spec)
    expected = model.state_dict()
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ZooCheckpointError(f"{p}: tensors do not match the model (missing {missing[:3]}, "
                                 f"unexpected {extra[:3]})")
    for k, v in expected.items():
        if tensors[k].shape != v.shape or tensors[k].dtype != v.dtype:
            raise ZooCheckpointError(f"{p}: tensor {k!r} has shape {tuple(tensors[k].shape)} {tensors[k].dtype}, "
                                     f"expected {tuple(v.shape)} {v.dtype}")
    _check_values(p, tensors)
    model.load_state_dict(tensors, strict=True)
    model.eval()
    return model, spec, metrics


#: Tensor-name suffixes of parameters that must be > 0 (quantizer steps and scales, BN variances >= 0).
_POSITIVE_SUFFIXES = (".step", ".alpha")


def _check_values(p: str, tensors: dict) -> None:
    """Refuse values no trained model has, naming the tensor: NaN/inf anywhere, a quantizer step or
    scale <= 0 (a zero step divides by zero at export), a negative BN running variance."""
    for k in sorted(tensors):
        t = tensors[k]
        if t.is_floating_point() and not torch.isfinite(t).all():
            bad = t.reshape(-1)[~torch.isfinite(t.reshape(-1))][0].item()
            raise ZooCheckpointError(f"{p}: tensor {k!r} contains {bad} (NaN or inf); this checkpoint cannot be "
                                     f"exported or trusted: retrain it")
        if k.endswith(_POSITIVE_SUFFIXES) and t.numel() and not bool((t > 0).all()):
            raise ZooCheckpointError(f"{p}: tensor {k!r} (a quantizer step/scale) is {t.min().item()!r}; it must "
                                     f"be > 0: retrain the model")
        if k.endswith(".running_var") and t.numel() and not bool((t >= 0).all()):
            raise ZooCheckpointError(f"{p}: tensor {k!r} (a batch-norm variance) is {t.min().item()!r}; it "
                                     f"must be >= 0: retrain the model")
