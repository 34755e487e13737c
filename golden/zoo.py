"""Quantizable model zoo: layer wrappers, the digits MLP/CNN, ResNet-18/34/20 and MobileNetV2 (torch).

Every convolution and linear layer is a :class:`QConv2d` / :class:`QLinear`: the ordinary
``nn.Conv2d`` / ``nn.Linear`` (same parameters, same ``state_dict`` keys) plus two *injected*
modules, a weight quantizer (``forward(w) -> fake-quantized w``) and an input-activation
quantizer (``forward(x) -> fake-quantized x``). The models follow the paper's convention: the
first and the last layer use 8-bit weights and 8-bit input activations, every other layer
``(wbits, abits)``.

The quantizers come from the registry of :mod:`golden.quantizers`
(``make_weight_quantizer(name, bits, **kw)`` / ``make_act_quantizer(name, bits, channels=None,
**kw)``) (looked up at call time); without it a small fallback offers ``"fp"`` and ``"post"`` weights and
``"fp"`` and ``"lsq"`` activations built from :class:`~golden.quantizers.POSTWeightQuantizer` and
:class:`~golden.quantizers.LSQActQuantizer`.

Activation signedness. The accelerator's activation codes are unsigned (``docs/arithmetic.md``),
so every layer input that follows a ReLU is quantized unsigned. Two inputs can be negative: the
image fed to the first layer when it is normalised (``build_model(..., signed_input=True)``), and
the linear bottlenecks of MobileNetV2 (the output of a block's projection, which has no ReLU).
Those layers have ``signed_input = True`` and their activation quantizer is requested signed
(:func:`make_act_quantizer` explains what each quantizer does with that).

Shapes. :func:`layer_shapes` runs one forward pass with hooks and lists every conv/linear with
its geometry; the overhead calculator, the cycle model and the hardware compiler use it.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import quantizers as _quantizers
from .errors import InputError

__all__ = [
    "QConv2d", "QLinear", "QUANT_LAYERS", "make_weight_quantizer", "make_act_quantizer",
    "set_quantization", "quant_layers",
    "DigitsMLP", "DigitsCNN", "ResNet", "ResNetCIFAR", "MobileNetV2",
    "MODEL_NAMES", "MODEL_INPUT_SHAPES", "RESHAPEABLE_MODELS", "EDGE_BITS", "build_model",
    "LayerShape", "layer_shapes",
]

#: Bits of the first and the last layer (weights and input activations), as in the paper.
EDGE_BITS = 8

_FALLBACK_WEIGHT = ("fp", "post")
_FALLBACK_ACT = ("fp", "lsq")


# --- quantizer factories -------------------------------------------------------

def make_weight_quantizer(name: str, bits: int, **kw) -> nn.Module:
    """Weight quantizer ``name`` at ``bits`` from the registry, or from the fallback while it is absent."""
    if hasattr(_quantizers, "make_weight_quantizer"):
        return _quantizers.make_weight_quantizer(name, bits, **kw)
    if name == "fp":
        return nn.Identity()
    if name == "post":
        return _quantizers.POSTWeightQuantizer(bits)
    raise InputError(f"unknown weight quantizer {name!r}; valid: {', '.join(_FALLBACK_WEIGHT)} "
                     f"(the quantizer registry is not installed yet)")


def make_act_quantizer(name: str, bits: int, channels: int | None = None, signed: bool = False,
                       **kw) -> nn.Module:
    """Activation quantizer ``name`` at ``bits`` for an input with ``channels`` channels.

    ``signed=True`` (an input that can be negative) gives ``lsq`` the library's signed
    :class:`~golden.quant.lsq.LSQQuantizer`; the other activation quantizers of the registry are
    unsigned only, so they are built unsigned with a ``UserWarning`` (the negative part of the
    input is clipped to 0). ``fp`` ignores signedness.
    """
    if hasattr(_quantizers, "make_act_quantizer"):
        if signed and name != "fp":
            if name == "lsq" and hasattr(_quantizers, "LSQQuantizer"):
                return _quantizers.LSQQuantizer(bits, signed=True, **kw)
            if name in getattr(_quantizers, "ACT_QUANTIZERS", {}):
                warnings.warn(f"activation quantizer {name!r} is unsigned; a layer input that can be negative "
                              f"is clipped at 0", UserWarning, stacklevel=3)
        return _quantizers.make_act_quantizer(name, bits, channels=channels, **kw)
    if name == "fp":
        return nn.Identity()
    if name == "lsq":
        if signed:
            warnings.warn("fallback LSQ is unsigned; a layer input that can be negative is clipped at 0",
                          UserWarning, stacklevel=3)
        return _quantizers.LSQActQuantizer(bits)
    raise InputError(f"unknown activation quantizer {name!r}; valid: {', '.join(_FALLBACK_ACT)} "
                     f"(the quantizer registry is not installed yet)")


# --- layer wrappers ------------------------------------------------------------

class _QuantMixin:
    """Shared bookkeeping of :class:`QConv2d` and :class:`QLinear`."""

    def _init_quant(self, weight_quant, act_quant, wbits, abits, signed_input):
        self.weight_quant = weight_quant if weight_quant is not None else nn.Identity()
        self.act_quant = act_quant if act_quant is not None else nn.Identity()
        self.wbits = None if wbits is None else int(wbits)
        self.abits = None if abits is None else int(abits)
        self.signed_input = bool(signed_input)
        self.quant_enabled = True

    def _quantized(self, x):
        if not self.quant_enabled:
            return x, self.weight
        return self.act_quant(x), self.weight_quant(self.weight)

    def _bits_repr(self) -> str:
        return f"wbits={self.wbits}, abits={self.abits}" + (", signed_input=True" if self.signed_input else "")


class QConv2d(_QuantMixin, nn.Conv2d):
    """``nn.Conv2d`` whose input and weight go through injected fake quantizers.

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding, groups, bias
        As ``nn.Conv2d`` (``bias`` defaults to False: every conv here is followed by BN).
    weight_quant : nn.Module or None
        ``forward(w) -> w_q``; None means float weights.
    act_quant : nn.Module or None
        ``forward(x) -> x_q`` applied to the layer's input (NCHW); None means float input.
    wbits, abits : int or None
        Bit-widths the quantizers were built for (bookkeeping for reports and export).
    signed_input : bool
        True when the input can be negative (the activation quantizer must be signed).

    Attributes
    ----------
    quant_enabled : bool
        False bypasses both quantizers (float warm-up, shape tracing); default True.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, groups=1, bias=False, *,
                 weight_quant=None, act_quant=None, wbits=None, abits=None, signed_input=False):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         groups=groups, bias=bias)
        self._init_quant(weight_quant, act_quant, wbits, abits, signed_input)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", " + self._bits_repr()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq, wq = self._quantized(x)
        return self._conv_forward(xq, wq, self.bias)


class QLinear(_QuantMixin, nn.Linear):
    """``nn.Linear`` whose input and weight go through injected fake quantizers.

    Parameters as :class:`QConv2d` (``bias`` defaults to True); the input is ``[N, in_features]``.
    """

    def __init__(self, in_features, out_features, bias=True, *, weight_quant=None, act_quant=None,
                 wbits=None, abits=None, signed_input=False):
        super().__init__(in_features, out_features, bias=bias)
        self._init_quant(weight_quant, act_quant, wbits, abits, signed_input)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", " + self._bits_repr()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq, wq = self._quantized(x)
        return F.linear(xq, wq, self.bias)


QUANT_LAYERS = (QConv2d, QLinear)


def quant_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, layer)`` of every :class:`QConv2d` / :class:`QLinear` in definition order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QUANT_LAYERS)]


def set_quantization(model: nn.Module, enabled: bool) -> None:
    """Switch fake quantization of every quantizable layer of ``model`` on or off."""
    for _, m in quant_layers(model):
        m.quant_enabled = bool(enabled)


class _Factory:
    """Builds quantizable layers with the bit-widths and quantizer names of one model."""

    def __init__(self, wbits, abits, weight_quant, act_quant, edge_bits=EDGE_BITS, edge_weight_quant=None,
                 edge_act_quant=None):
        self.wbits, self.abits, self.edge_bits = int(wbits), int(abits), int(edge_bits)
        self.weight_quant, self.act_quant = weight_quant, act_quant
        self.edge_weight_quant = weight_quant if edge_weight_quant is None else edge_weight_quant
        self.edge_act_quant = act_quant if edge_act_quant is None else edge_act_quant

    def _bits(self, edge):
        return (self.edge_bits, self.edge_bits) if edge else (self.wbits, self.abits)

    def _names(self, edge):
        return (self.edge_weight_quant, self.edge_act_quant) if edge else (self.weight_quant, self.act_quant)

    def conv(self, cin, cout, k, stride=1, padding=None, groups=1, edge=False, signed_input=False):
        wb, ab = self._bits(edge)
        wq, aq = self._names(edge)
        padding = (k - 1) // 2 if padding is None else padding
        return QConv2d(cin, cout, k, stride=stride, padding=padding, groups=groups, bias=False,
                       weight_quant=make_weight_quantizer(wq, wb),
                       act_quant=make_act_quantizer(aq, ab, channels=cin, signed=signed_input),
                       wbits=wb, abits=ab, signed_input=signed_input)

    def linear(self, fin, fout, edge=False, signed_input=False):
        wb, ab = self._bits(edge)
        wq, aq = self._names(edge)
        return QLinear(fin, fout, bias=True,
                       weight_quant=make_weight_quantizer(wq, wb),
                       act_quant=make_act_quantizer(aq, ab, channels=fin, signed=signed_input),
                       wbits=wb, abits=ab, signed_input=signed_input)


def _init_weights(model: nn.Module) -> None:
    """torchvision's initialisation: Kaiming-normal convs, BN weight 1 / bias 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# --- digits models -------------------------------------------------------------

class DigitsMLP(nn.Module):
    """The digits MLP ``64 -> hidden... -> classes`` (ReLU between) built from :class:`QLinear`.

    Widths 64-64-32-10 by default, 8-bit first and last layers; quantizers are injected so any
    weight/activation quantizer can be selected.
    Accepts ``[N, 64]`` or ``[N, 1, 8, 8]`` (flattened).
    """

    def __init__(self, f: _Factory, features=64, hidden=(64, 32), classes=10):
        super().__init__()
        widths = (int(features), *(int(h) for h in hidden), int(classes))
        n = len(widths) - 1
        self.layers = nn.ModuleList(f.linear(widths[i], widths[i + 1], edge=(i == 0 or i == n - 1))
                                    for i in range(n))

    def forward(self, x):
        x = torch.flatten(x, 1)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class DigitsCNN(nn.Module):
    """Small CNN for one-channel square images: the 8x8 digits (default) or 28x28 Fashion-MNIST.

    ``[N, 1, H, H]`` (or flattened ``[N, H*H]``) -> logits: ``conv3x3(1->w) BN ReLU, conv3x3(w->2w) BN
    ReLU, maxpool2, conv3x3(2w->4w) BN ReLU, maxpool2, flatten, FC(4w * (H/4)**2 -> classes)``;
    ``w = width`` (16: ~25k weights at H = 8, ~54k at H = 28). ``in_hw`` = H, a multiple of 4.
    """

    def __init__(self, f: _Factory, width=16, classes=10, signed_input=False, in_hw=8):
        super().__init__()
        w, hw = int(width), int(in_hw)
        if hw < 4 or hw % 4:
            raise InputError(f"DigitsCNN needs a square input whose side is a multiple of 4, got {in_hw!r}")
        self.in_shape = (1, hw, hw)
        self.features = nn.Sequential(
            f.conv(1, w, 3, edge=True, signed_input=signed_input), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            f.conv(w, 2 * w, 3), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            f.conv(2 * w, 4 * w, 3), nn.BatchNorm2d(4 * w), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.fc = f.linear(4 * w * (hw // 4) ** 2, classes, edge=True)
        _init_weights(self)

    def forward(self, x):
        x = x.reshape((-1,) + self.in_shape)  # [N, H*H] or [N, 1, H, H]; traceable (no shape branch)
        return self.fc(torch.flatten(self.features(x), 1))


# --- ResNets -------------------------------------------------------------------

class BasicBlock(nn.Module):
    """ResNet basic block; the shortcut is a 1x1 conv + BN when the shape changes (option B)."""

    expansion = 1

    def __init__(self, f: _Factory, cin, cout, stride=1):
        super().__init__()
        self.conv1 = f.conv(cin, cout, 3, stride=stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = f.conv(cout, cout, 3)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(f.conv(cin, cout, 1, stride=stride, padding=0), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity)


class ResNet(nn.Module):
    """ImageNet-shape ResNet (torchvision layout: ``conv1, bn1, relu, maxpool, layer1..4, avgpool, fc``).

    ``blocks = (2, 2, 2, 2)`` is ResNet-18, ``(3, 4, 6, 3)`` ResNet-34. Float parameter counts equal
    torchvision's (11,689,512 and 21,797,672 for 1000 classes).
    """

    def __init__(self, f: _Factory, blocks=(2, 2, 2, 2), num_classes=1000, signed_input=False):
        super().__init__()
        self.conv1 = f.conv(3, 64, 7, stride=2, padding=3, edge=True, signed_input=signed_input)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        cin = 64
        for i, (n, cout) in enumerate(zip(blocks, (64, 128, 256, 512))):
            layers = []
            for j in range(n):
                layers.append(BasicBlock(f, cin, cout, stride=2 if (j == 0 and i > 0) else 1))
                cin = cout
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = f.linear(512, num_classes, edge=True)
        _init_weights(self)

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class ResNetCIFAR(nn.Module):
    """CIFAR-shape ResNet-(6n+2) (He et al. 2016, Sec. 4.2): ``conv3x3(3->16)``, three stages of
    ``n`` basic blocks (16, 32, 64 channels, 32/16/8 px), global average pool, FC.

    ``n = 3`` is ResNet-20. Shortcuts that change shape are 1x1 conv + BN (option B, as in the
    pytorchcv model the ASQ code quantizes): 272,474 float parameters for 10 classes.

    ``in_shape`` (e.g. ``(1, 8, 8)``: ``resnet8``, the digits ResNet-8 with ``n = 1``) makes the
    model accept flattened inputs too (reshaped first, like :class:`DigitsCNN`).
    """

    def __init__(self, f: _Factory, n=3, num_classes=10, signed_input=False, in_shape=None):
        super().__init__()
        self.in_shape = tuple(in_shape) if in_shape is not None else None
        self.conv1 = f.conv(3 if in_shape is None else in_shape[0], 16, 3, edge=True, signed_input=signed_input)
        self.bn1 = nn.BatchNorm2d(16)
        cin, stages = 16, []
        for i, cout in enumerate((16, 32, 64)):
            for j in range(n):
                stages.append(BasicBlock(f, cin, cout, stride=2 if (j == 0 and i > 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = f.linear(64, num_classes, edge=True)
        _init_weights(self)

    def forward(self, x):
        if self.in_shape is not None:
            x = x.reshape((-1,) + self.in_shape)
        x = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# --- MobileNetV2 ---------------------------------------------------------------

def _make_divisible(v, divisor=8):
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class InvertedResidual(nn.Module):
    """MobileNetV2 block: [1x1 expand, BN, ReLU6], 3x3 depthwise, BN, ReLU6, 1x1 project, BN (linear)."""

    def __init__(self, f: _Factory, cin, cout, stride, expand, signed_input):
        super().__init__()
        hidden = int(round(cin * expand))
        self.use_res = stride == 1 and cin == cout
        layers = []
        if expand != 1:
            layers += [f.conv(cin, hidden, 1, signed_input=signed_input), nn.BatchNorm2d(hidden),
                       nn.ReLU6(inplace=True)]
            dw_signed = False
        else:
            dw_signed = signed_input
        layers += [f.conv(hidden, hidden, 3, stride=stride, groups=hidden, signed_input=dw_signed),
                   nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
                   f.conv(hidden, cout, 1), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al. 2018), torchvision layout and initialisation, width 1.0.

    3,504,872 float parameters for 1000 classes (torchvision's count). The inputs of the blocks
    after the first and of the final 1x1 conv are linear bottlenecks (can be negative) and are
    quantized signed. Dropout 0.2 before the classifier as torchvision.
    """

    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, f: _Factory, num_classes=1000, width_mult=1.0, signed_input=False):
        super().__init__()
        cin = _make_divisible(32 * width_mult)
        last = _make_divisible(1280 * max(1.0, width_mult))
        layers = [nn.Sequential(f.conv(3, cin, 3, stride=2, edge=True, signed_input=signed_input),
                                nn.BatchNorm2d(cin), nn.ReLU6(inplace=True))]
        signed = False                      # the stem ends in ReLU6
        for t, c, n, s in self.SETTINGS:
            cout = _make_divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(f, cin, cout, s if i == 0 else 1, t, signed_input=signed))
                cin, signed = cout, True    # a block ends in its linear projection
        layers.append(nn.Sequential(f.conv(cin, last, 1, signed_input=signed), nn.BatchNorm2d(last),
                                    nn.ReLU6(inplace=True)))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.classifier = f.linear(last, num_classes, edge=True)
        _init_weights(self)
        nn.init.normal_(self.classifier.weight, 0, 0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x):
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(self.dropout(x))


# --- registry ------------------------------------------------------------------

#: Input shape ``(C, H, W)`` (or ``(F,)``) each model is defined for.
MODEL_INPUT_SHAPES = {
    "mlp": (64,),
    "cnn": (1, 8, 8),
    "resnet18": (3, 224, 224),
    "resnet34": (3, 224, 224),
    "resnet20": (3, 32, 32),
    "mobilenetv2": (3, 224, 224),
    "resnet8": (1, 8, 8),
}
MODEL_NAMES = tuple(MODEL_INPUT_SHAPES)
_DEFAULT_CLASSES = {"mlp": 10, "cnn": 10, "resnet18": 1000, "resnet34": 1000, "resnet20": 10,
                    "mobilenetv2": 1000, "resnet8": 10}


#: Models whose input shape :func:`build_model` can change (``input_shape=``).
RESHAPEABLE_MODELS = ("mlp", "cnn", "resnet8")


def _input_shape(name: str, input_shape) -> tuple:
    """The checked input shape of model ``name`` (its default when ``input_shape`` is None)."""
    if input_shape is None:
        return MODEL_INPUT_SHAPES[name]
    shape = tuple(input_shape)
    if name not in RESHAPEABLE_MODELS:
        raise InputError(f"model {name!r} has the fixed input shape {MODEL_INPUT_SHAPES[name]}; input_shape= "
                         f"applies to {', '.join(RESHAPEABLE_MODELS)}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape):
        raise InputError(f"input_shape must hold positive integers, got {input_shape!r}")
    if name == "mlp":
        if len(shape) != 1:
            raise InputError(f"mlp takes (features,) inputs, got input_shape {input_shape!r}")
    elif len(shape) != 3 or shape[0] != 1 or shape[1] != shape[2] or shape[1] % 4:
        raise InputError(f"{name} takes (1, H, H) inputs with H a multiple of 4, got input_shape {input_shape!r}")
    return shape


def build_model(name: str, wbits: int, abits: int, weight_quant: str = "post", act_quant: str = "lsq",
                num_classes: int | None = None, *, edge_bits: int = EDGE_BITS,
                edge_weight_quant: str | None = None, edge_act_quant: str | None = None,
                signed_input: bool = False, input_shape: tuple | None = None) -> nn.Module:
    """A fresh quantizable model.

    Parameters
    ----------
    name : str
        One of :data:`MODEL_NAMES`: ``mlp``, ``cnn`` (digits), ``resnet18``, ``resnet34``,
        ``mobilenetv2`` (ImageNet shape, 224x224), ``resnet20`` (CIFAR shape, 32x32), ``resnet8``
        (ResNet-8 for the 8x8 digits: one basic block per stage, 16/32/64 channels).
    wbits, abits : int
        Weight and input-activation bits of every layer but the first and the last.
    weight_quant, act_quant : str
        Quantizer names for the registry of :mod:`golden.quantizers` (``"fp"`` = float).
    num_classes : int or None
        Classifier width; default 10 for ``mlp``/``cnn``/``resnet20``, 1000 otherwise.
    edge_bits : int
        Bits of the first and the last layer (default 8).
    edge_weight_quant, edge_act_quant : str or None
        Quantizers of the first and the last layer (default: the same as the others). Needed
        when the main quantizer has no ``edge_bits`` variant (e.g. APoT stops at 7 bits: use
        ``edge_weight_quant="uniform"`` or ``"post"``).
    signed_input : bool
        The model's input can be negative (e.g. mean/std-normalised images); the first layer's
        activation quantizer is then signed. Default False: feed pixels in ``[0, 1]`` (or raw
        0..16 digits) and let the first conv/BN learn the normalisation.
    input_shape : tuple or None
        Input shape of one sample for the models of :data:`RESHAPEABLE_MODELS`: ``(1, H, H)`` for
        ``cnn`` and ``resnet8`` (H a multiple of 4, e.g. ``(1, 28, 28)`` for Fashion-MNIST),
        ``(F,)`` for ``mlp``. None = :data:`MODEL_INPUT_SHAPES` (the 8x8 digits).

    The returned model has ``model_name``, ``wbits``, ``abits``, ``edge_bits``, ``input_shape``.
    Raises ``ValueError`` for unknown names or invalid widths.
    """
    if name not in MODEL_INPUT_SHAPES:
        raise InputError(f"unknown model {name!r}; valid models: {', '.join(MODEL_NAMES)}")
    for label, v in (("wbits", wbits), ("abits", abits), ("edge_bits", edge_bits)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InputError(f"{label} must be a positive integer, got {v!r}")
    classes = _DEFAULT_CLASSES[name] if num_classes is None else num_classes
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise InputError(f"num_classes must be a positive integer, got {num_classes!r}")
    shape = _input_shape(name, input_shape)
    f = _Factory(wbits, abits, weight_quant, act_quant, edge_bits, edge_weight_quant, edge_act_quant)
    if name == "mlp":
        model = DigitsMLP(f, features=shape[0], classes=classes)
    elif name == "cnn":
        model = DigitsCNN(f, classes=classes, signed_input=signed_input, in_hw=shape[1])
    elif name == "resnet18":
        model = ResNet(f, (2, 2, 2, 2), classes, signed_input=signed_input)
    elif name == "resnet34":
        model = ResNet(f, (3, 4, 6, 3), classes, signed_input=signed_input)
    elif name == "resnet20":
        model = ResNetCIFAR(f, 3, classes, signed_input=signed_input)
    elif name == "resnet8":
        model = ResNetCIFAR(f, 1, classes, signed_input=signed_input, in_shape=shape)
    else:
        model = MobileNetV2(f, classes, signed_input=signed_input)
    model.model_name, model.input_shape = name, shape
    model.wbits, model.abits, model.edge_bits = int(wbits), int(abits), int(edge_bits)
    model.weight_quant_name, model.act_quant_name = weight_quant, act_quant
    model.edge_weight_quant_name, model.edge_act_quant_name = f.edge_weight_quant, f.edge_act_quant
    return model


# --- layer shapes --------------------------------------------------------------

@dataclass(frozen=True)
class LayerShape:
    """Geometry of one conv/linear call, as seen in a forward pass.

    ``kind`` is ``"conv"`` or ``"linear"``; a linear layer has kernel/stride ``(1, 1)``, padding
    ``(0, 0)``, groups 1 and ``in_hw == out_hw == (1, 1)``. ``wbits``/``abits`` are the layer's
    configured bits (None for plain ``nn`` layers or float ones).
    """

    name: str
    kind: str
    in_ch: int
    out_ch: int
    kernel: tuple
    stride: tuple
    padding: tuple
    groups: int
    in_hw: tuple
    out_hw: tuple
    wbits: int | None = None
    abits: int | None = None

    @property
    def weights(self) -> int:
        """Weight count ``in_ch / groups * out_ch * kh * kw`` (no bias)."""
        return self.in_ch // self.groups * self.out_ch * self.kernel[0] * self.kernel[1]

    @property
    def macs(self) -> int:
        """Multiply-accumulates of one sample: ``weights * out_h * out_w``."""
        return self.weights * self.out_hw[0] * self.out_hw[1]

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("kernel", "stride", "padding", "in_hw", "out_hw"):
            d[k] = list(d[k])
        return d


def _pair(v):
    return tuple(int(a) for a in v) if isinstance(v, (tuple, list)) else (int(v), int(v))


@torch.no_grad()
def layer_shapes(model: nn.Module, input_shape=None) -> list[LayerShape]:
    """Every ``nn.Conv2d`` / ``nn.Linear`` call of one forward pass, in execution order.

    ``input_shape`` is ``(C, H, W)`` / ``(F,)`` or with a leading batch dimension (default: the
    model's ``input_shape``). The pass runs on one zero sample in eval mode with fake quantization
    bypassed, so the model's quantizer state, BN statistics and training flag are left untouched.
    """
    if input_shape is None:
        input_shape = getattr(model, "input_shape", None)
        if input_shape is None:
            raise InputError("layer_shapes needs input_shape for a model without an input_shape attribute")
    shape = tuple(int(s) for s in input_shape)
    if len(shape) in (1, 3):
        shape = (1,) + shape
    if len(shape) not in (2, 4) or any(s < 1 for s in shape):
        raise InputError(f"input_shape must be (C, H, W) or (F,), optionally with a batch dimension, got {input_shape!r}")
    names = {m: n for n, m in model.named_modules()}
    records: list[LayerShape] = []

    def hook(module, inputs, output):
        x = inputs[0]
        common = dict(name=names.get(module, "?"), wbits=getattr(module, "wbits", None),
                      abits=getattr(module, "abits", None))
        if isinstance(module, nn.Conv2d):
            records.append(LayerShape(kind="conv", in_ch=module.in_channels, out_ch=module.out_channels,
                                      kernel=_pair(module.kernel_size), stride=_pair(module.stride),
                                      padding=_pair(module.padding), groups=int(module.groups),
                                      in_hw=tuple(x.shape[-2:]), out_hw=tuple(output.shape[-2:]), **common))
        else:
            records.append(LayerShape(kind="linear", in_ch=module.in_features, out_ch=module.out_features,
                                      kernel=(1, 1), stride=(1, 1), padding=(0, 0), groups=1,
                                      in_hw=(1, 1), out_hw=(1, 1), **common))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    layers = quant_layers(model)
    saved_q = [m.quant_enabled for _, m in layers]
    was_training = model.training
    try:
        set_quantization(model, False)
        model.eval()
        param = next(model.parameters(), None)
        model(torch.zeros(shape, dtype=param.dtype if param is not None else torch.float32))
    finally:
        for h in handles:
            h.remove()
        for (_, m), q in zip(layers, saved_q):
            m.quant_enabled = q
        model.train(was_training)
    return records
