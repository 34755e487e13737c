"""The model zoo: every model builds and runs, edge layers are 8-bit, float parameter counts equal
torchvision's, and ``layer_shapes`` reports the geometry the cycle model and the compiler use."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from golden.zoo import (MODEL_NAMES, LayerShape, QConv2d, QLinear, build_model, layer_shapes, quant_layers,
                        set_quantization)

# Small inputs keep the ImageNet-shape models fast (their strides reduce 32x32 to 1x1).
TINY_INPUT = {"mlp": (64,), "cnn": (1, 8, 8), "resnet18": (3, 32, 32), "resnet34": (3, 32, 32),
              "resnet20": (3, 32, 32), "mobilenetv2": (3, 32, 32), "resnet8": (1, 8, 8)}
CLASSES = {"mlp": 10, "cnn": 10, "resnet18": 1000, "resnet34": 1000, "resnet20": 10, "mobilenetv2": 1000, "resnet8": 10}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread is much faster than two on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def float_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_builds_and_runs_with_edge_layers_at_8_bits(name):
    torch.manual_seed(0)
    model = build_model(name, wbits=3, abits=4)
    x = torch.rand(2, *TINY_INPUT[name])
    y = model(x)
    assert y.shape == (2, CLASSES[name]) and torch.isfinite(y).all()
    layers = quant_layers(model)
    assert all(isinstance(m, (QConv2d, QLinear)) for _, m in layers)
    # every conv/linear of the model is quantizable
    plain = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(plain) == len(layers)
    order = layer_shapes(model, TINY_INPUT[name])
    assert (order[0].wbits, order[0].abits) == (8, 8)
    assert (order[-1].wbits, order[-1].abits) == (8, 8)
    assert all((s.wbits, s.abits) == (3, 4) for s in order[1:-1])
    first = dict(layers)[order[0].name]
    assert getattr(first.weight_quant, "bits", 8) == 8 and getattr(first.act_quant, "bits", 8) == 8
    mid = dict(layers)[order[1].name]
    assert getattr(mid.weight_quant, "bits", 3) == 3 and getattr(mid.act_quant, "bits", 4) == 4


@pytest.mark.parametrize("name, expected", [
    ("resnet18", 11_689_512),      # torchvision.models.resnet18()
    ("resnet34", 21_797_672),      # torchvision.models.resnet34()
    ("mobilenetv2", 3_504_872),    # torchvision.models.mobilenet_v2()
    ("resnet20", 272_474),         # pytorchcv resnet20_cifar10 (1x1-conv shortcuts)
])
def test_float_parameter_counts_match_reference(name, expected):
    assert float_params(build_model(name, 4, 4, weight_quant="fp", act_quant="fp")) == expected


def test_other_quantizers_plug_in():
    with pytest.raises(ValueError, match="apot"):          # APoT has no 8-bit variant for the edges
        build_model("cnn", 4, 4, weight_quant="apot")
    model = build_model("cnn", 4, 4, weight_quant="apot", act_quant="asq", edge_weight_quant="post")
    assert type(model.fc.weight_quant).__name__ == "POSTWeightQuantizer"
    x = torch.rand(4, 1, 8, 8) * 16
    model(x).sum().backward()
    assert model.fc.weight.grad is not None and torch.isfinite(model.fc.weight.grad).all()


def test_bad_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="valid models: mlp, cnn, resnet18, resnet34, resnet20, mobilenetv2"):
        build_model("vgg16", 4, 4)
    with pytest.raises(ValueError, match="post"):
        build_model("cnn", 4, 4, weight_quant="nope")
    with pytest.raises(ValueError, match="lsq"):
        build_model("cnn", 4, 4, act_quant="nope")
    with pytest.raises(ValueError, match="wbits"):
        build_model("cnn", 0, 4)


def test_layer_shapes_resnet18_at_224():
    model = build_model("resnet18", 4, 4, weight_quant="fp", act_quant="fp")
    shapes = layer_shapes(model, (3, 224, 224))
    assert len(shapes) == 21                     # 17 convs of the main path + 3 shortcuts + fc
    assert shapes[0] == LayerShape("conv1", "conv", 3, 64, (7, 7), (2, 2), (3, 3), 1, (224, 224), (112, 112), 8, 8)
    down = [s for s in shapes if s.name.endswith("downsample.0")]
    assert [(s.in_ch, s.out_ch, s.kernel, s.stride, s.in_hw, s.out_hw) for s in down] == [
        (64, 128, (1, 1), (2, 2), (56, 56), (28, 28)),
        (128, 256, (1, 1), (2, 2), (28, 28), (14, 14)),
        (256, 512, (1, 1), (2, 2), (14, 14), (7, 7))]
    assert shapes[-1].kind == "linear" and (shapes[-1].in_ch, shapes[-1].out_ch) == (512, 1000)
    assert sum(s.macs for s in shapes) == 1_814_073_344          # the well-known 1.82 GMACs
    assert shapes[0].to_dict()["kernel"] == [7, 7]


def test_layer_shapes_mobilenetv2_depthwise():
    model = build_model("mobilenetv2", 4, 4, weight_quant="fp", act_quant="fp")
    shapes = layer_shapes(model)                 # the model's own 224x224 input
    assert len(shapes) == 53
    dw = [s for s in shapes if s.groups > 1]
    assert len(dw) == 17 and all(s.groups == s.in_ch == s.out_ch and s.kernel == (3, 3) for s in dw)
    assert shapes[-2].out_hw == (7, 7) and shapes[-1].in_ch == 1280
    assert sum(s.macs for s in shapes) == 300_774_272


def test_layer_shapes_leaves_the_model_untouched():
    model = build_model("cnn", 4, 4)
    model.train()
    bn = model.features[1]
    mean_before = bn.running_mean.clone()
    layer_shapes(model)
    assert model.training and torch.equal(bn.running_mean, mean_before)
    for _, m in quant_layers(model):
        assert m.quant_enabled
        for q in (m.weight_quant, m.act_quant):
            if hasattr(q, "initialized"):
                assert not bool(q.initialized)   # quantizers still initialise from real data
    with pytest.raises(ValueError, match="input_shape"):
        layer_shapes(model, (1, 2, 3, 4, 5))


def test_quantization_switch_gives_the_float_layer():
    torch.manual_seed(0)
    model = build_model("resnet20", 2, 2)
    conv = model.layers[0].conv1
    x = torch.rand(2, 16, 8, 8)
    set_quantization(model, False)
    assert torch.equal(conv(x), F.conv2d(x, conv.weight, None, 1, 1))
    set_quantization(model, True)
    assert not torch.equal(conv(x), F.conv2d(x, conv.weight, None, 1, 1))


def test_mobilenetv2_linear_bottleneck_inputs_are_signed():
    model = build_model("mobilenetv2", 4, 4)
    layers = dict(quant_layers(model))
    assert not layers["features.0.0"].signed_input
    assert layers["features.2.conv.0"].signed_input                # after block 1's projection
    assert getattr(layers["features.2.conv.0"].act_quant, "qmin", -1) < 0
    assert not layers["classifier"].signed_input


def test_digits_cnn_learns_in_a_few_steps():
    from golden.data import load_digits_split
    torch.manual_seed(0)
    x_train, y_train, _, _ = load_digits_split()
    x, y = torch.from_numpy(x_train[:512]).view(-1, 1, 8, 8), torch.from_numpy(y_train[:512])
    model = build_model("cnn", 4, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for epoch in range(3):
        for i in range(0, 512, 64):
            loss = F.cross_entropy(model(x[i:i + 64]), y[i:i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert sum(losses[-4:]) / 4 < 0.5 * sum(losses[:4]) / 4
