"""The quantizer library: level sets, forward values, gradients, registry, ``post-accel levels``.

Every expected value below is worked out by hand in the comment next to it (see
docs/quantizers.md for the definitions).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from golden import arith
from golden import levels as L
from golden.quantizers import (ACT_QUANTIZERS, ADAPTER_FACTORS, WEIGHT_QUANTIZERS, APoTWeightQuantizer,
                               ASQActQuantizer, ASQAdapter, FPQuantizer, LSQActQuantizer, LSQWeightQuantizer,
                               POSTWeightQuantizer, POTWeightQuantizer, QILActQuantizer, QILWeightQuantizer,
                               make_act_quantizer, make_weight_quantizer)

R2 = math.sqrt(0.5)


def t(values):
    return torch.tensor(values, dtype=torch.float32)


def set_param(p, value):
    with torch.no_grad():
        p.fill_(value)


def ready(q, **params):
    """Mark ``q`` initialised and set its learned parameters by hand."""
    for name, v in params.items():
        set_param(getattr(q, name), v)
    q.initialized.fill_(True)
    return q


# --- level sets (golden.levels) ------------------------------------------------------------

LEVELS = {
    ("uniform", 2): [-2, -1, 0, 1],
    ("uniform", 3): [q / 3 for q in range(-4, 4)],
    ("uniform", 4): [q / 7 for q in range(-8, 8)],
    ("pot", 2): [-1, 0, 1],
    ("pot", 3): [-1, -0.5, -0.25, 0, 0.25, 0.5, 1],
    ("pot", 4): [-1, -2**-1, -2**-2, -2**-3, -2**-4, -2**-5, -2**-6, 0,
                 2**-6, 2**-5, 2**-4, 2**-3, 2**-2, 2**-1, 1],
    ("post", 2): [-1, 0, 1],
    ("post", 3): [-1, -R2, -0.5, 0, 0.5, R2, 1],
    ("post", 4): [-1, -R2, -0.5, -R2 / 2, -0.25, -R2 / 4, -0.125, 0,
                  0.125, R2 / 4, 0.25, R2 / 2, 0.5, R2, 1],
    # APoT: 2 bits ternary; 3 bits = build_power_value(2) = {0, 1/8, 1/4, 1/2} / (1/2);
    # 4 bits = build_power_value(3): a in {0, 1/2, 1/4, 1/16}, b in {0, 1/8} -> sums / (5/8)
    ("apot", 2): [-1, 0, 1],
    ("apot", 3): [-1, -0.5, -0.25, 0, 0.25, 0.5, 1],
    ("apot", 4): [-1, -0.8, -0.6, -0.4, -0.3, -0.2, -0.1, 0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 1],
}


@pytest.mark.parametrize("quant,bits", sorted(LEVELS))
def test_level_sets_pinned(quant, bits):
    got = L.level_set(quant, bits)
    np.testing.assert_allclose(got, LEVELS[(quant, bits)], rtol=0, atol=1e-15)
    assert np.all(np.diff(got) > 0)
    # the code words decode onto exactly this set; every level has a code
    assert np.array_equal(np.unique(L.code_values(quant, bits)), got)
    expected_count = 2 ** bits if quant == "uniform" else 2 ** bits - 1
    assert len(got) == expected_count


def test_uniform_symmetric_and_counts_up_to_8_bits():
    np.testing.assert_allclose(L.uniform_levels(3, symmetric=True), [q / 3 for q in range(-3, 4)])
    for b in range(2, 9):
        for quant in ("pot", "post"):
            assert len(L.level_set(quant, b)) == 2 ** b - 1
    for b in range(2, 8):
        assert len(L.level_set("apot", b)) == 2 ** b - 1


def test_post_levels_agree_with_arith():
    for b in range(2, 9):
        np.testing.assert_array_equal(L.post_magnitudes(b), arith.post_magnitudes(b))
        np.testing.assert_array_equal(L.code_values("post", b), arith.post_code_values(b))
        np.testing.assert_array_equal(L.level_set("post", b), np.unique(arith.post_code_values(b)))
        x = np.random.default_rng(b).uniform(-1.3, 1.3, 2000)
        x[:3] = [0.0, -0.0, 1.0]
        np.testing.assert_array_equal(L.encode_magnitude(x, L.post_magnitudes(b), b), arith.encode_post(x, b))


def test_code_assignment():
    # sign-magnitude: code = sign << (b-1) | m, m = 1 is the largest magnitude, m = 0 is zero
    assert L.code_values("pot", 3).tolist() == [0, 1, 0.5, 0.25, 0, -1, -0.5, -0.25]
    assert L.code_values("apot", 4)[1:8].tolist() == [1, 0.8, 0.6, 0.4, 0.3, 0.2, 0.1]
    # uniform: two's complement of q, level q / Qp
    np.testing.assert_allclose(L.code_values("uniform", 3), np.array([0, 1, 2, 3, -4, -3, -2, -1]) / 3)
    assert str(L.code_values("pot", 3)[4]) == "0.0"    # no negative zero


def test_apot_build_power_value_matches_repository_construction():
    # B = 2: base_a = {0, 1/2, 1/4, 1/8}, divided by 1/2
    np.testing.assert_allclose(L.apot_build_power_value(2), [0, 0.25, 0.5, 1])
    # B = 4: a in {0, 2^-1, 2^-3, 2^-5}, b in {0, 2^-2, 2^-4, 2^-6}; 16 distinct sums, max 3/4
    v4 = L.apot_build_power_value(4)
    assert len(v4) == 16 and v4[-1] == 1.0
    assert (2**-5 + 2**-6) / 0.75 in v4 and (2**-3) / 0.75 in v4
    for B in range(2, 7):
        assert len(L.apot_build_power_value(B)) == 2 ** B
    with pytest.raises(arith.ArithError, match="B = 2..6"):
        L.apot_build_power_value(7)


@pytest.mark.parametrize("quant,bits", [("post", 1), ("pot", 9), ("apot", 8), ("apot", 1), ("uniform", 1),
                                        ("post", 2.0), ("pot", True)])
def test_level_set_bits_errors(quant, bits):
    with pytest.raises(arith.ArithError, match=f"{quant} weights: bits must be an integer"):
        L.level_set(quant, bits)


def test_unknown_level_set():
    with pytest.raises(ValueError, match="valid: uniform, pot, post, apot"):
        L.level_set("log", 4)


# --- LSQ -----------------------------------------------------------------------------------

def test_lsq_act_forward_hand_checked():
    q = ready(LSQActQuantizer(2), step=0.5)          # Qp = 3
    x = t([-1.0, 0.2, 0.25, 0.7, 1.6, 3.0])
    # x/s = -2, 0.4, 0.5, 1.4, 3.2, 6 -> floor(+1/2) = -2, 0, 1, 1, 3, 6 -> clamp [0, 3]
    y, codes = q(x, return_codes=True)
    assert y.tolist() == [0.0, 0.0, 0.5, 0.5, 1.5, 1.5]
    assert codes.tolist() == [0, 0, 1, 1, 3, 3] == q.codes(x).tolist()
    assert q.levels().tolist() == [0, 1 / 3, 2 / 3, 1]


def test_lsq_weight_forward_hand_checked():
    q = ready(LSQWeightQuantizer(3), step=0.25)      # Qn = 4, Qp = 3
    w = t([-2.0, -0.9, -0.375, -0.1, 0.125, 0.6, 1.0])
    # w/s = -8, -3.6, -1.5, -0.4, 0.5, 2.4, 4 -> floor(+1/2) = -8, -4, -1, 0, 1, 2, 4 -> clamp [-4, 3]
    assert q(w).tolist() == [-1.0, -1.0, -0.25, 0.0, 0.25, 0.5, 0.75]
    assert q.codes(w).tolist() == [-4, -4, -1, 0, 1, 2, 3]
    sym = ready(LSQWeightQuantizer(3, symmetric=True), step=0.25)
    assert sym(w).tolist() == [-0.75, -0.75, -0.25, 0.0, 0.25, 0.5, 0.75]
    np.testing.assert_array_equal(q.levels().numpy(), L.uniform_levels(3))


def test_lsq_initialisation_from_data():
    x = t([[0.0, 1.0, 2.0, 5.0]])                    # mean |x| = 2
    q = LSQActQuantizer(2)                           # Qp = 3
    q(x)
    assert bool(q.initialized)
    assert q.step.item() == pytest.approx(2 * 2 / math.sqrt(3))
    w = t([[1.0, -1.0], [0.0, 4.0], [-2.0, 0.0]])     # per row mean |w| = 1, 2, 1
    qw = LSQWeightQuantizer(4, per_channel=True, channels=3)   # Qp = 7
    qw(w)
    np.testing.assert_allclose(qw.step.detach().numpy(), np.array([1, 2, 1]) * 2 / math.sqrt(7), rtol=1e-6)
    z = LSQActQuantizer(3)
    z(torch.zeros(4, 4))
    assert z.step.item() == 1.0                       # degenerate data falls back to 1


def test_lsq_gradients():
    q = ready(LSQActQuantizer(2), step=0.5)           # Qp = 3
    x = t([-0.3, 0.2, 0.7, 1.4, 1.6, 1.7, 2.0]).requires_grad_()
    up = t([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    (q(x) * up).sum().backward()
    # v = x/s = -0.6, 0.4, 1.4, 2.8, 3.2, 3.4, 4: inside iff 0 <= v <= 3 (3.2 and 3.4 are outside)
    assert x.grad.tolist() == [0, 2, 3, 4, 0, 0, 0]
    v = np.array([-0.6, 0.4, 1.4, 2.8, 3.2, 3.4, 4.0])
    dq = np.where(v < 0, 0, np.where(v > 3, 3, np.floor(v + 0.5) - v))      # LSQ Eq. 3, Qn = 0
    g = 1 / math.sqrt(7 * 3)                                                  # N = 7, Qp = 3
    assert q.step.grad.item() == pytest.approx(g * float((up.numpy() * dq).sum()), rel=1e-5)


def test_lsq_signed_step_gradient_below_range_and_per_channel_scale():
    q = ready(LSQWeightQuantizer(2, per_channel=True, channels=2))   # Qn = 2, Qp = 1
    with torch.no_grad():
        q.step.copy_(t([1.0, 0.5]))
    w = t([[-3.0, 0.2, 0.75], [-0.3, 0.1, 2.0]]).requires_grad_()
    q(w).sum().backward()
    # row 0: v = -3, 0.2, 0.75 -> dq = -Qn = -2, 0 - 0.2, 1 - 0.75 ; N = 3 elements per channel
    # row 1: v = -0.6, 0.2, 4 -> dq = -1 + 0.6, 0 - 0.2, Qp = 1
    g = 1 / math.sqrt(3 * 1)
    np.testing.assert_allclose(q.step.grad.numpy(), [g * (-2 - 0.2 + 0.25), g * (-0.4 - 0.2 + 1)], rtol=1e-5)
    assert w.grad.tolist() == [[0, 1, 1], [1, 1, 0]]


# --- POT / POST / APoT ----------------------------------------------------------------------

def test_pot_forward_ties_and_codes():
    q = ready(POTWeightQuantizer(3), alpha=2.0)      # levels 2 * {0, +-1/4, +-1/2, +-1}
    w = t([0.2, 0.3, 0.75, 1.4, 1.5, 3.0, -0.6])
    # v = 0.1 -> 0 (below 1/8); 0.15 -> 1/4; 0.375 tie -> 1/2; 0.7 -> 1/2; 0.75 tie -> 1; clip 1; -0.3 -> -1/4
    assert q(w).tolist() == [0.0, 0.5, 1.0, 1.0, 2.0, 2.0, -0.5]
    codes = q.codes(w)
    assert codes.tolist() == [0, 3, 2, 2, 1, 1, 4 | 3]
    np.testing.assert_array_equal(L.code_values("pot", 3)[codes] * 2, q(w).detach().numpy())
    assert q.kmax == 2 and q.qp == 3


def test_post_forward_hand_checked():
    q = ready(POSTWeightQuantizer(3), alpha=1.0)     # {0, +-1/2, +-sqrt(1/2), +-1}
    w = t([0.2, 0.26, 0.6, 0.61, 0.86, -2.0])
    # mids 1/4, (1/2 + 0.7071)/2 = 0.6036, (0.7071 + 1)/2 = 0.8536
    np.testing.assert_allclose(q(w).detach().numpy(), [0, 0.5, 0.5, R2, 1, -1], rtol=1e-7)
    np.testing.assert_array_equal(q.codes(w), arith.encode_post(w.double().numpy(), 3))
    np.testing.assert_array_equal(q.levels().numpy(), L.level_set("post", 3))


def test_apot_forward_hand_checked():
    q = ready(APoTWeightQuantizer(4, normalize=False), alpha=1.0)   # {0, .1, .2, .3, .4, .6, .8, 1}
    w = t([0.04, 0.06, 0.26, 0.68, 0.72, 0.95, -0.52, 2.0])
    np.testing.assert_allclose(q(w).detach().numpy(), [0, 0.1, 0.3, 0.6, 0.8, 1.0, -0.6, 1.0], rtol=1e-6)
    np.testing.assert_allclose(L.code_values("apot", 4)[q.codes(w)], q(w).detach().numpy(), rtol=1e-6)
    # with the authors' normalisation: w = [-1, 0, 1] has mean 0, unbiased std 1; alpha starts at 3
    n = APoTWeightQuantizer(4)
    y = n(t([-1.0, 0.0, 1.0]))
    assert n.alpha.item() == 3.0
    # v = -1/3, 0, 1/3 -> nearest of {.3, .4} is .3 -> 3 * .3
    np.testing.assert_allclose(y.detach().numpy(), [-0.9, 0.0, 0.9], rtol=1e-6)
    # normalisation makes the output independent of the weights' scale and offset
    np.testing.assert_allclose(n(t([9.0, 10.0, 11.0])).detach().numpy(), [-0.9, 0.0, 0.9], rtol=1e-6)


def test_apot_two_bits_is_ternary():
    q = ready(APoTWeightQuantizer(2, normalize=False), alpha=1.0)
    assert q(t([-0.8, -0.4, 0.49, 0.5, 3.0])).tolist() == [-1.0, 0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("cls,bits", [(POTWeightQuantizer, 4), (POSTWeightQuantizer, 4),
                                      (APoTWeightQuantizer, 4)])
def test_alpha_and_weight_gradients(cls, bits):
    kw = {"normalize": False} if cls is APoTWeightQuantizer else {}
    q = ready(cls(bits, **kw), alpha=0.5)
    w = t([-0.9, -0.3, -0.02, 0.1, 0.33, 0.7]).requires_grad_()
    up = t([1.0, -2.0, 3.0, 0.5, 1.5, -1.0])
    (q(w) * up).sum().backward()
    v = np.clip(w.detach().numpy() / 0.5, -1, 1)
    qv = q.quantize_normalised(torch.as_tensor(v)).numpy()
    inside = np.abs(w.detach().numpy()) <= 0.5
    assert w.grad.tolist() == np.where(inside, up.numpy(), 0).tolist()     # STE inside, 0 outside
    d_alpha = np.where(inside, qv - v, np.sign(w.detach().numpy()))
    g = 1 / math.sqrt(6 * (2 ** (bits - 1) - 1))                              # N = 6, Qp = 7
    assert q.alpha.grad.item() == pytest.approx(g * float((up.numpy() * d_alpha).sum()), rel=1e-5)


def test_power_initialisation_and_per_channel():
    q = POSTWeightQuantizer(4)
    q(t([[0.5, -3.0], [1.0, 2.0]]))
    assert q.alpha.item() == 3.0                     # max |w|
    p = POTWeightQuantizer(3, per_channel=True, channels=2)
    w = t([[0.5, -4.0], [1.0, 2.0]])
    y = p(w)
    assert p.alpha.detach().tolist() == [4.0, 2.0]
    # row 0: v = 1/8 -> tie between 0 and 1/4 -> 1/4; -1. row 1: v = 1/2, 1
    assert y.tolist() == [[1.0, -4.0], [1.0, 2.0]]
    with pytest.raises(ValueError, match="expected 2 channels"):
        p(torch.ones(3, 2))
    with pytest.raises(ValueError, match="needs channels"):
        POTWeightQuantizer(3, per_channel=True)


# --- QIL -----------------------------------------------------------------------------------

def test_qil_weight_forward_hand_checked():
    q = ready(QILWeightQuantizer(3), c=0.5, d=0.25)  # interval [0.25, 0.75], q_D = 3, gamma = 1
    w = t([0.1, 0.25, 0.3, 0.5, 0.7, 0.9, -0.6])
    # u = (|w| - 0.25) / 0.5 clamped: 0, 0, 0.1, 0.5, 0.9, 1, 0.7; *3 -> 0, 0, .3, 1.5, 2.7, 3, 2.1
    np.testing.assert_allclose(q(w).detach().numpy(), [0, 0, 0, 2 / 3, 1, 1, -2 / 3], rtol=1e-6)
    assert q.codes(w).tolist() == [0, 0, 0, 2, 3, 3, -2]
    set_param(q.gamma, 2.0)                          # u = 0.5 -> 0.25 -> 0.75 -> 1/3
    assert q(t([0.5])).item() == pytest.approx(1 / 3)
    assert q.levels().tolist() == [q_ / 3 for q_ in range(-3, 4)]


def test_qil_act_forward_and_init():
    q = ready(QILActQuantizer(2), c=1.0, d=1.0)      # interval [0, 2], q_D = 3
    x = t([-1.0, 0.0, 0.5, 1.0, 1.9, 3.0])
    # u = x / 2 clamped: 0, 0, .25, .5, .95, 1; *3 -> 0, 0, .75, 1.5, 2.85, 3
    np.testing.assert_allclose(q(x).detach().numpy(), [0, 0, 1 / 3, 2 / 3, 1, 1], rtol=1e-6)
    fresh = QILActQuantizer(2)
    fresh(t([0.0, 1.0, 2.0, 9.0]))                   # u = min(9, 2 * 3 * sqrt(3)) = 9 -> c = d = 4.5
    assert fresh.c.item() == pytest.approx(4.5) and fresh.d.item() == pytest.approx(4.5)
    fresh2 = QILActQuantizer(2)
    fresh2(t([0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 30.0]))   # mean 3.8; u = 2 * 3.8 * sqrt(3) < 30
    assert fresh2.c.item() == pytest.approx(3.8 * math.sqrt(3), rel=1e-6)


def test_qil_weight_gradients():
    q = ready(QILWeightQuantizer(3), c=0.5, d=0.25)
    w = t([0.1, 0.3, -0.6, 0.9]).requires_grad_()    # pruned, inside, inside, clipped
    q(w).sum().backward()
    # inside: d w^/dw = 1/(2d) = 2; outside 0 (STE through the discretiser)
    np.testing.assert_allclose(w.grad.numpy(), [0, 2, 2, 0], rtol=1e-6)
    # d/dc sign(w)(|w| - c + d)/(2d) = -sign(w)/(2d): -2 + 2 = 0 for the two inside weights
    assert q.c.grad.item() == pytest.approx(0.0, abs=1e-6)
    # d/dd = sign(w)(c - |w|)/(2 d^2): 0.2/0.125 for w = 0.3, -(-0.1)/0.125 for w = -0.6 -> 2.4
    assert q.d.grad.item() == pytest.approx((0.5 - 0.3) / 0.125 - (0.5 - 0.6) / 0.125, rel=1e-5)
    # d/dgamma u^gamma at gamma = 1: sign(w) u ln u, u = 0.1 and 0.7
    assert q.gamma.grad.item() == pytest.approx(0.1 * math.log(0.1) - 0.7 * math.log(0.7), rel=1e-4)


# --- ASQ -----------------------------------------------------------------------------------

@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("factor", sorted(ADAPTER_FACTORS))
@pytest.mark.parametrize("shape", [(5, 32, 4, 4), (5, 32)])
def test_asq_starts_as_lsq(layers, factor, shape):
    torch.manual_seed(1)
    x = torch.relu(torch.randn(shape)) * 3
    asq = ASQActQuantizer(3, channels=32, layers=layers, factor=factor)
    assert torch.equal(asq.adapter(x), torch.ones(shape[0]))      # exactly 1 at init
    lsq = LSQActQuantizer(3)
    ya, ca = asq(x, return_codes=True)
    yl, cl = lsq(x, return_codes=True)
    assert torch.equal(asq.step, lsq.step)
    assert torch.equal(ya, yl) and torch.equal(ca, cl)
    assert torch.equal(asq.codes(x), lsq.codes(x))


def test_asq_adapter_shapes():
    assert ASQAdapter(64).hidden.out_features == 4                 # 64 // 16
    assert ASQAdapter(8).hidden.out_features == 1                  # floor at 1 hidden unit
    assert ASQAdapter(64, reduction=4).hidden.out_features == 16
    one = ASQAdapter(64, layers=1)
    assert one.hidden is None and one.out.in_features == 64
    with pytest.raises(ValueError, match="expects \\[B, 64"):
        one(torch.ones(2, 63))
    with pytest.raises(ValueError, match="layers must be 1 or 2"):
        ASQAdapter(64, layers=3)
    with pytest.raises(ValueError, match="unknown factor"):
        ASQAdapter(64, factor="tanh")


@pytest.mark.parametrize("channels", [16, 32, 64])
def test_asq_adapter_data_dependent_init(channels):
    """The first batch standardises every hidden unit (alive on about half the samples, O(1) spread), so
    no unit starts dead; beta stays exactly 1 (the last layer is zero) and 1-layer adapters are untouched."""
    torch.manual_seed(3)
    # post-ReLU activations: all positive, nearly the same mean in every sample (as in a trained CNN)
    x = torch.relu(torch.randn(64, channels, 4, 4) * 0.3 + 0.5)
    for seed in range(8):                             # several default inits, some of them dead before
        torch.manual_seed(seed)
        q = ASQActQuantizer(4, channels=channels)
        y = q(x)                                      # first forward pass: initialise step and adapter
        pre = q.adapter.hidden(q.adapter.pool(x))
        assert torch.allclose(pre.mean(0), torch.zeros(pre.shape[1]), atol=1e-4)
        assert torch.allclose(pre.std(0), torch.ones(pre.shape[1]), atol=1e-4)
        alive = (pre > 0).float().mean(0)
        assert bool(((alive > 0.2) & (alive < 0.8)).all()), alive
        assert torch.equal(q.adapter(x), torch.ones(64))
        assert torch.equal(y, LSQActQuantizer(4)(x))
    one = ASQActQuantizer(4, channels=channels, layers=1)
    w = one.adapter.out.weight.clone()
    one(x)
    assert torch.equal(one.adapter.out.weight, w)
    q = ASQActQuantizer(4, channels=channels)
    w = q.adapter.hidden.weight.clone()
    q(x[:1])                                          # a single sample has no spread: left as it is
    assert torch.equal(q.adapter.hidden.weight, w)


def test_asq_per_sample_step_forward():
    q = ready(ASQActQuantizer(2, channels=2, layers=1, factor="relu", z_grid=False), step=0.5)
    set_param(q.adapter.out.bias, 2.0)               # beta = relu(0 + 2) = 2 -> s' = 1
    x = t([[0.4, 0.6], [2.5, 5.0]])
    # x / 1 -> floor(+1/2) = 0, 1, 3, 5 -> clamp [0, 3]
    assert q(x).tolist() == [[0.0, 1.0], [3.0, 3.0]]
    assert q.codes(x).tolist() == [[0, 1], [3, 3]]
    assert q.adaptive_step(x).tolist() == [1.0, 1.0]
    with torch.no_grad():                            # beta now depends on the sample: relu(x0 + 2)
        q.adapter.out.weight.copy_(t([[1.0, 0.0]]))
    assert q.adaptive_step(x).tolist() == [pytest.approx(1.2), pytest.approx(2.25)]
    q.adapter.z_grid = True                          # the hardware grid: z = 2.4 -> 2.40625 (1/64 steps)
    assert q.adaptive_step(x).tolist() == [pytest.approx(2.40625 / 2), pytest.approx(2.25)]


def test_asq_z_grid_snaps_and_passes_gradient():
    from golden import arith
    from golden.quant.asq import snap_to_z_grid
    z = torch.tensor([0.0, 0.01, -0.008, 100.0, -100.0, 1 / 128], requires_grad=True)
    zq = snap_to_z_grid(z)
    step = 2.0 ** -arith.ASQ_Z_FRAC
    assert zq.tolist() == [0.0, step, -step, arith.ASQ_Z_LIMIT - step, -arith.ASQ_Z_LIMIT, step]
    zq.sum().backward()
    assert z.grad.tolist() == [1.0, 1.0, 1.0, 0.0, 0.0, 1.0]


def test_asq_gradients_eq8_eq9():
    torch.manual_seed(0)
    q = ready(ASQActQuantizer(2, channels=3, layers=1, factor="sigmoid"), step=0.5)   # beta = 1
    x = torch.tensor([[0.1, 0.9, 2.0], [0.3, 1.2, 0.6]]).requires_grad_()
    up = t([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    (q(x) * up).sum().backward()
    v = x.detach().numpy() / 0.5                    # s' = s = 0.5 (beta = 1)
    dq = np.where(v < 0, 0, np.where(v > 3, 3, np.floor(v + 0.5) - v))  # Eq. 7 (LSQ, Qn = 0, Qp = 3)
    per_sample = (up.numpy() * dq).sum(axis=1)
    g = 1 / math.sqrt(6 * 3)
    # Eq. 8: dL/ds = g * sum_i beta_i * (...)_i with beta = 1
    assert q.step.grad.item() == pytest.approx(g * per_sample.sum(), rel=1e-5)
    # Eq. 9: dL/dbeta_i = s * (...)_i; beta = 2 sigmoid(z) has d beta / dz = 1/2 at z = 0
    assert q.adapter.out.bias.grad.item() == pytest.approx(0.5 * 0.5 * per_sample.sum(), rel=1e-5)
    pooled = x.detach().numpy()                       # NC input: pooling is the identity
    np.testing.assert_allclose(q.adapter.out.weight.grad.numpy()[0],
                               0.25 * (per_sample[:, None] * pooled).sum(axis=0), rtol=1e-5)
    # input: STE (v = 4 is clipped) plus the adapter path, which is zero at init (zero last weight)
    np.testing.assert_allclose(x.grad.numpy(), np.where(v <= 3, up.numpy(), 0), rtol=1e-6)


def test_asq_needs_channels():
    with pytest.raises(ValueError, match="needs channels"):
        make_act_quantizer("asq", 4)


# --- registry ------------------------------------------------------------------------------

def test_registry_names_and_classes():
    assert set(WEIGHT_QUANTIZERS) >= {"fp", "uniform", "pot", "post", "apot", "qil"}
    assert set(ACT_QUANTIZERS) >= {"fp", "lsq", "qil", "asq"}
    assert type(make_weight_quantizer("post", 4)) is POSTWeightQuantizer
    assert type(make_weight_quantizer("uniform", 3)) is LSQWeightQuantizer
    assert type(make_act_quantizer("lsq", 4, channels=16)) is LSQActQuantizer
    asq = make_act_quantizer("asq", 4, channels=64, reduction=8)
    assert isinstance(asq, ASQActQuantizer) and asq.adapter.hidden_units == 8
    fp = make_weight_quantizer("fp", 4)
    x = torch.randn(3, 3)
    assert isinstance(fp, FPQuantizer) and fp(x) is x
    for name in ("uniform", "pot", "post", "apot", "qil"):
        assert make_weight_quantizer(name, 3).bits == 3
    for name in ("lsq", "qil", "asq"):
        assert make_act_quantizer(name, 3, channels=4).bits == 3


def test_registry_unknown_names():
    with pytest.raises(ValueError, match="unknown weight quantizer 'log'; valid: fp, uniform, pot, post, apot, qil"):
        make_weight_quantizer("log", 4)
    with pytest.raises(ValueError, match="unknown activation quantizer 'pact'; valid: fp, lsq, qil, asq"):
        make_act_quantizer("pact", 4)


@pytest.mark.parametrize("kind,name,bits", [
    ("w", "post", 1), ("w", "post", 9), ("w", "pot", 1), ("w", "apot", 8), ("w", "apot", 1),
    ("w", "uniform", 1), ("w", "qil", 1), ("a", "lsq", 1), ("a", "lsq", 9), ("a", "qil", 0),
    ("a", "asq", 1), ("w", "post", 3.5)])
def test_registry_bits_errors(kind, name, bits):
    with pytest.raises(arith.ArithError, match="bits must be an integer in"):
        if kind == "w":
            make_weight_quantizer(name, bits)
        else:
            make_act_quantizer(name, bits, channels=8)


def test_post_at_one_bit_message_names_post():
    with pytest.raises(arith.ArithError, match="POST needs a sign bit"):
        make_weight_quantizer("post", 1)
    with pytest.raises(arith.ArithError, match="2..7"):
        make_weight_quantizer("apot", 8)


# --- post-accel levels ------------------------------------------------------------------

def test_cli_levels_json(capsys):
    from flows.cli import main

    assert main(["levels", "--quant", "post", "--bits", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["quant"] == "post" and out["bits"] == 4 and out["count"] == 15
    np.testing.assert_allclose(out["levels"], LEVELS[("post", 4)], atol=1e-15)
    assert out["code_values"] == arith.post_code_values(4).tolist()
    assert main(["levels", "--quant", "apot", "--bits", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["levels"] == LEVELS[("apot", 3)]


def test_cli_levels_text_and_errors(capsys):
    from flows.cli import main

    assert main(["levels", "--quant", "pot", "--bits", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("pot at 2 bits: 3 levels")
    assert out[1:] == ["  -1.0000000000  11", "  +0.0000000000  00 10", "  +1.0000000000  01"]
    assert main(["levels", "--quant", "post", "--bits", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("post-accel: error: post weights: bits must be")
    with pytest.raises(SystemExit):
        main(["levels", "--quant", "log", "--bits", "3"])
