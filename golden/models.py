"""The quantized MLP the accelerator runs (torch).

Layer ``l`` is ``input LSQ quantizer -> Linear with POST weights (float bias)``; every layer but
the last is followed by ReLU, whose output the next layer's input quantizer quantizes. The first
and the last linear layers use ``edge_bits`` for their weights *and* their input activations (the
paper keeps the edge layers at 8 bits); the middle ones use ``wbits`` / ``abits``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import arith
from .quantizers import LSQActQuantizer, POSTWeightQuantizer

__all__ = ["QuantLinear", "QuantMLP"]


class QuantLinear(nn.Module):
    """``y = x_q @ w_q.T + b``: LSQ input quantizer (``abits_in``) and POST weights (``wbits``).

    With ``quantize=False`` it is a plain float ``nn.Linear`` (used for the float warm-up).
    """

    def __init__(self, fan_in: int, fan_out: int, wbits: int, abits_in: int):
        super().__init__()
        self.linear = nn.Linear(fan_in, fan_out)
        self.act_quant = LSQActQuantizer(abits_in)
        self.weight_quant = POSTWeightQuantizer(wbits)

    @property
    def fan_in(self) -> int:
        return self.linear.in_features

    @property
    def fan_out(self) -> int:
        return self.linear.out_features

    @property
    def wbits(self) -> int:
        return self.weight_quant.bits

    @property
    def abits_in(self) -> int:
        return self.act_quant.bits

    def forward(self, x: torch.Tensor, quantize: bool = True, return_codes: bool = False):
        """``[B, fan_in]`` float -> ``[B, fan_out]`` float; with ``return_codes`` also the input codes."""
        if not quantize:
            return (self.linear(x), None) if return_codes else self.linear(x)
        if return_codes:
            xq, codes = self.act_quant(x, return_codes=True)
        else:
            xq, codes = self.act_quant(x), None
        y = F.linear(xq, self.weight_quant(self.linear.weight), self.linear.bias)
        return (y, codes) if return_codes else y


class QuantMLP(nn.Module):
    """MLP ``features -> hidden... -> classes`` with POST weights and LSQ activations.

    Parameters
    ----------
    features, hidden, classes
        Layer widths; ``len(hidden) >= 1``.
    wbits, abits
        POST weight bits and activation bits of the middle layers.
    edge_bits
        Weight bits and input-activation bits of the first and the last linear layer.

    ``quant_enabled`` (attribute, default True) switches fake quantization on; training turns
    it off for the optional float warm-up.
    """

    def __init__(self, features: int = 64, hidden=(64, 32), classes: int = 10,
                 wbits: int = 4, abits: int = 4, edge_bits: int = 8):
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        if len(hidden) < 1 or any(h < 1 for h in hidden) or features < 1 or classes < 1:
            raise ValueError(f"QuantMLP needs positive widths and at least one hidden layer, "
                             f"got features={features}, hidden={hidden}, classes={classes}")
        arith.check_wbits(wbits)
        arith.check_abits(abits)
        arith.check_wbits(edge_bits)
        arith.check_abits(edge_bits)
        self.features, self.hidden, self.classes = int(features), hidden, int(classes)
        self.wbits, self.abits, self.edge_bits = int(wbits), int(abits), int(edge_bits)
        widths = (self.features, *hidden, self.classes)
        n = len(widths) - 1
        layers = []
        for i in range(n):
            edge = i == 0 or i == n - 1
            layers.append(QuantLinear(widths[i], widths[i + 1],
                                      wbits=edge_bits if edge else wbits,
                                      abits_in=edge_bits if edge else abits))
        self.layers = nn.ModuleList(layers)
        self.quant_enabled = True

    def _run(self, x: torch.Tensor, return_codes: bool):
        codes = []
        h = x
        for i, layer in enumerate(self.layers):
            h, c = layer(h, quantize=self.quant_enabled, return_codes=True)
            if return_codes:
                codes.append(c)
            if i < len(self.layers) - 1:
                h = F.relu(h)
        return h, codes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, features]`` float -> logits ``[B, classes]`` float."""
        return self._run(x, return_codes=False)[0]

    @torch.no_grad()
    def quantized_forward_codes(self, x: torch.Tensor):
        """Integer activation codes of the fake-quantized forward pass (eval mode, no grad).

        Returns
        -------
        codes : list of int64 tensors
            ``codes[0]`` the input codes ``[B, features]``, then each non-final layer's output
            codes ``[B, width]`` (= the next layer's input codes).
        logits : float32 tensor ``[B, classes]``
            Identical to ``forward(x)`` in eval mode.
        """
        if not self.quant_enabled:
            raise RuntimeError("quantization is disabled on this model; set quant_enabled = True")
        was_training = self.training
        self.eval()
        try:
            logits, codes = self._run(torch.as_tensor(x, dtype=torch.float32), return_codes=True)
        finally:
            self.train(was_training)
        return codes, logits
