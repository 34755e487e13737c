"""The quantizer library (torch): one module per quantizer family, one shared base.

=============  =========================================  =====================================
name           class                                      module
=============  =========================================  =====================================
weights
``fp``         :class:`FPQuantizer`                       :mod:`golden.quant.base`
``uniform``    :class:`LSQWeightQuantizer` (signed LSQ)   :mod:`golden.quant.lsq`
``pot``        :class:`POTWeightQuantizer`                :mod:`golden.quant.power`
``post``       :class:`POSTWeightQuantizer`               :mod:`golden.quant.power`
``apot``       :class:`APoTWeightQuantizer`               :mod:`golden.quant.power`
``qil``        :class:`QILWeightQuantizer`                :mod:`golden.quant.qil`
activations
``fp``         :class:`FPQuantizer`                       :mod:`golden.quant.base`
``lsq``        :class:`LSQActQuantizer`                   :mod:`golden.quant.lsq`
``qil``        :class:`QILActQuantizer`                   :mod:`golden.quant.qil`
``asq``        :class:`ASQActQuantizer`                   :mod:`golden.quant.asq`
=============  =========================================  =====================================

Level sets (NumPy, torch-free) live in :mod:`golden.levels`; the decisions are in
``docs/quantizers.md``.
"""

from .asq import ADAPTER_FACTORS, ASQActQuantizer, ASQAdapter
from .base import FPQuantizer, Quantizer, grad_scale, round_half_up, round_ste
from .lsq import LSQActQuantizer, LSQQuantizer, LSQWeightQuantizer
from .power import APoTWeightQuantizer, POSTWeightQuantizer, POTWeightQuantizer, SignMagnitudeWeightQuantizer
from .qil import QILActQuantizer, QILQuantizer, QILWeightQuantizer
from .registry import ACT_QUANTIZERS, WEIGHT_QUANTIZERS, make_act_quantizer, make_weight_quantizer

__all__ = [
    "round_half_up", "round_ste", "grad_scale", "Quantizer", "FPQuantizer",
    "LSQQuantizer", "LSQActQuantizer", "LSQWeightQuantizer",
    "SignMagnitudeWeightQuantizer", "POTWeightQuantizer", "POSTWeightQuantizer", "APoTWeightQuantizer",
    "QILQuantizer", "QILWeightQuantizer", "QILActQuantizer",
    "ASQAdapter", "ASQActQuantizer", "ADAPTER_FACTORS",
    "WEIGHT_QUANTIZERS", "ACT_QUANTIZERS", "make_weight_quantizer", "make_act_quantizer",
]
