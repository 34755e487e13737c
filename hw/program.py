"""Engine parameters and programs: what the host writes into :class:`hw.engine.PostEngine`.

Pure Python + NumPy + :mod:`golden.arith` (no Amaranth), so the compiler, the cocotb runner and
the tests can build and check programs without the HDL toolchain.

* :class:`EngineParams` -- the generator parameters of ``docs/engine.md`` and their derived widths.
* :class:`LayerSpec` -- one convolution or fully-connected layer (codes already at the engine's weight
  width, per-channel ``{mult, shift, bias}``, ``acc_shift``, pooling, the output quantizer).
* :func:`build_program` -- lays the layers out in the engine's memories (activation regions,
  weight tiles, CHAN words, adapters, tables, descriptors) and checks every field against its
  register before any simulation; every error names the layer and what to change.
* :class:`Program` -- the host writes (configuration and per-sample input), the reads that fetch
  every layer's outputs, their decoding, and a direct reference on golden.arith's hardware-sized
  stage arithmetic (:meth:`Program.reference_run`).
* The word encoders of the memory map: :func:`chan_word`, :func:`table_word`, :func:`factor_word`,
  :func:`adapt_word` (and their inverses).
* :func:`predicted_cycles` -- the engine's exact cycle count (the schedule of ``hw/engine.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag

import numpy as np

from golden import arith
from golden.errors import InputError

__all__ = ["EngineFitError", "EngineParams", "require_engine_params", "Sel", "Ctrl", "Flag", "DescField", "DESC_FIELDS", "DESC_STRIDE", "DESC_BITS",
           "SIGNED_FIELDS", "LayerSpec", "AdapterSpec", "Program", "build_program", "predicted_cycles",
           "layer_cycles", "program_layer_cycles", "Pass", "chan_word", "LAYER_OVERHEAD", "TAIL_CYCLES", "WALK_FLUSH",
           "ADAPT_TAIL", "RUN_OVERHEAD", "CHAN_BITS", "CHAN_MULT_BITS", "CHAN_SHIFT_BITS", "Q_MULT_FRAC",
           "chan_fields", "factor_word", "factor_fields", "table_word", "table_fields", "table_words", "adapt_word"]

#: Descriptor slots per layer in the ``DESC`` address space (``layer * 64 + field``).
DESC_STRIDE = 64
#: Width of one descriptor field in the engine (every field is stored as a 16-bit word).
DESC_BITS = 16



class EngineFitError(InputError):
    """Engine parameters out of range, or a layer/program that does not fit the engine; the message names
    the parameter or layer and the flag that fixes it."""


class Sel(IntEnum):
    """``sel`` values of the host ports (the memory map of ``docs/engine.md``)."""

    ACT = 0
    WEIGHT = 1
    CHAN = 2       #: per-output-channel rescale parameters {mult, shift, bias} (:func:`chan_word`)
    DESC = 3
    CTRL = 4
    RESULT = 5
    ADAPT = 6      #: ASQ adapter words (32-bit two's complement, ``ADAPTER_ACC_BITS``)
    TABLE = 7      #: ASQ factor tables: entry i = {beta_mant, beta_shift, inv_mant, inv_shift} (:func:`table_word`)


class Ctrl(IntEnum):
    """``CTRL`` register addresses."""

    N_LAYERS = 0     #: a run ends before this descriptor slot
    BETA = 1         #: ASQ factor of the network input (layer 0 with ``INPUT_BETA``) as {mant, shift} (:func:`factor_word`)
    FIRST_LAYER = 2  #: a run starts at this descriptor slot (a program in passes: the pass's first)


class Flag(IntFlag):
    """Bits of the ``FLAGS`` descriptor field."""

    FINAL = 1         #: write v to RESULT (pixel * n_out + o); no quantizer
    INPUT_BETA = 2    #: input codes came from an ASQ quantizer: the channel multiplier is scaled by beta
                      #: (golden.arith.beta_multiplier)
    RELU = 4          #: v = max(v, relu_floor)
    ASQ = 8           #: the output quantizer is ASQ: channel sums, adapter, factor tables
    ADAPTER_RELU = 16 #: two-layer adapter: ReLU on the hidden units
    SAVE_RES = 32     #: the quantizing walk also stores the pooled values (a later layer's residual)
    ADD_RES = 64      #: v += align_value(saved value, res_mult, res_shift) before the saturation and the ReLU
    POOL_SUM = 128    #: global sum pooling: saturate(round_half_up(sum / 2**POOL_SHIFT)) (golden.arith.sum_pool)
    PRESCALE = 256    #: ASQ: the pooled value becomes golden.arith.prescale(v) with Q_MULT_LO / 2**Q_MULT_HI first


class DescField(IntEnum):
    """Fields of a layer descriptor (``DESC`` address ``layer * 64 + field``).

    A fully-connected layer is a 1x1 convolution on a 1x1 input (``K = 1``, ``CT = n_it``, one
    pixel). Fields marked signed are 16-bit two's complement. ``docs/engine.md`` has the formulas.
    """

    N_IT = 0       #: input tiles of a receptive field, K*K*CT
    N_OT = 1       #: output tiles, ceil(n_out / C)
    N_OUT = 2      #: output channels
    IN_BASE = 3    #: activation word of the input region
    OUT_BASE = 4   #: activation word of the (pooled) output region (unused when final)
    W_BASE = 5     #: weight word of tile (ot=0, it=0); tile (ot, it) at w_base + ot*n_it + it
    C_BASE = 6     #: CHAN index of output channel 0
    N_SPAN = 7     #: cycles per output tile, max(n_it, C)
    FLAGS = 8      #: :class:`Flag` bits
    HI = 9         #: largest output code
    LO = 10        #: smallest output code
    K = 11         #: kernel size (square)
    CT = 12        #: input channel tiles an output tile reads at each tap (dense: ceil(C_in / R))
    STRIDE = 13    #: convolution stride
    PAD = 14       #: zero padding on every side
    IN_H = 15      #: input height
    IN_W = 16      #: input width
    OUT_W = 17     #: convolution output width
    N_PIX = 18     #: convolution output pixels, out_h * out_w
    OCT = 19       #: activation words per output pixel, ceil(n_out / R)
    COL_STEP = 20  #: input word step between horizontally adjacent output pixels, stride * CT
    ROW_STEP = 21  #: (signed) step from the last pixel of an output row to the first of the next
    KROW_JUMP = 22 #: (signed) word step from the end of one kernel row to the start of the next, (IN_W-K)*CT_in + KX_JUMP
    PIX0 = 23      #: (signed) input word of tap (0, 0) of output pixel (0, 0), in_base - PAD*(IN_W+1)*CT
    RELU_FLOOR = 24  #: (signed) ReLU floor of v
    Q_SHIFT = 25   #: quantizer shift: non-ASQ the whole shift; ASQ value_frac (the table's inv_shift is added)
    PK = 26        #: max-pooling window (1: no pooling)
    PS = 27        #: pooling stride
    PP = 28        #: pooling padding
    CONV_H = 29    #: convolution output height (the pool's input)
    P_W = 30       #: pooled output width
    P_NPIX = 31    #: pooled output pixels
    A_BASE = 32    #: ADAPT word of the layer's adapter
    HID = 33       #: adapter hidden units (1 for a one-layer adapter)
    Z_SHIFT = 34   #: z_frac - ASQ_Z_FRAC: z on the table grid is round_half_up(z / 2**Z_SHIFT)
    KX_JUMP = 35   #: word step from one tap's last channel tile to the next tap's first, CT_in - CT + 1
    OT_STEP = 36   #: input word offset between output tiles (depthwise: C / R channel tiles; dense: 0)
    RES_MULT = 37  #: residual alignment multiplier (1..2**15-1)
    RES_SHIFT = 38 #: residual alignment shift (1..63)
    Q_MULT_LO = 39 #: non-ASQ: quantizer multiplier (1..2**15-1; LSQ 2**14); ASQ with PRESCALE: prescale
                   #: multiplier (1..2**15-1); ASQ without: 0
    Q_MULT_HI = 40 #: ASQ with PRESCALE: prescale shift (1..63); otherwise 0
    SRC = 41       #: 1 + the layer whose output codes this layer reads (0: the network input); an
                   #: INPUT_BETA layer takes that layer's ASQ factor from the engine's factor memory
    ACC_SHIFT = 42 #: rescale operand pre-shift: a = acc >> ACC_SHIFT (golden.arith.stage_value)
    POOL_SHIFT = 43  #: sum pooling: v = saturate(round_half_up(sum / 2**POOL_SHIFT)), sum_pool_shift of
                     #: the convolution's positions (golden.arith.sum_pool); 0 otherwise
    SUM_SHIFT = 44 #: ASQ adapter input: S = saturate(round_half_up(channel sum / 2**SUM_SHIFT)), pool_shift of
                   #: the pooled positions (golden.arith.asq_sums)
    H_SHIFT = 45   #: adapter hidden units: h = (ADAPTER_RELU ? relu(H) : H) >> H_SHIFT (golden.arith.adapter_z)
    V_LAST = 46    #: valid outputs of the last output tile of a pixel, n_out - (n_ot-1)*C (read last:
                   #: the only field not used in the cycle that latches it)


#: Number of descriptor fields the engine stores per layer.
DESC_FIELDS = len(DescField)

# --- the schedule constants (see hw/engine.py "Schedule") -------------------
#: Cycles per layer outside the tile loop and the tail: 1 (LAYER) + DESC_FIELDS + 1 (DESC: one
#: field read per cycle, plus the cycle that latches the last one).
LAYER_OVERHEAD = 1 + DESC_FIELDS + 1
#: Cycles of the MAC phase's tail beyond the last tile's valid outputs: the last step's memory
#: data 1, product register 1, accumulators 1 (taken by the drain), channel rescale 4.
TAIL_CYCLES = 7
#: Cycles a pooling/quantizing walk takes beyond its taps (pipeline flush).
WALK_FLUSH = 6
#: Cycles of the adapter beyond its HID*(n_out+2)+1 reads: the last read's data 1, the table index 1,
#: the table read 1.
ADAPT_TAIL = 3
#: Cycles per run outside the layers: the final LAYER cycle that raises ``done``.
RUN_OVERHEAD = 1
#: Width of a CHAN entry: {mult: signed MULT_BITS+1, shift: 6, bias: signed BIAS_BITS}, LSB first.
CHAN_MULT_BITS = arith.MULT_BITS + 1
CHAN_SHIFT_BITS = 6
CHAN_BITS = CHAN_MULT_BITS + CHAN_SHIFT_BITS + arith.BIAS_BITS
#: Fraction bits of the default (identity) non-ASQ quantizer multiplier ``2**Q_MULT_FRAC`` (< 2**MULT_BITS).
Q_MULT_FRAC = arith.MULT_BITS - 1


@dataclass(frozen=True)
class EngineParams:
    """Generator parameters of the layer engine (``docs/engine.md``, "Parameters").

    Attributes
    ----------
    rows : int
        R, input lanes: activations consumed per cycle; one sqrt(2) LUT per row.
    cols : int
        C, output lanes: one accumulator per column.
    wbits, abits, frac_bits : int
        POST weight code width, activation code width, product fraction bits.
    max_fan_in : int
        Largest supported fan-in; sets ``acc_bits``.
    act_words, weight_words, chan_words, result_words, max_layers : int
        Memory depths (words) and descriptor slots.
    value_words : int
        Depth of the value buffer (a layer's pre-quantization values v, ``n_pix * n_out``).
    adapter_words, max_channels : int
        Depth of the ASQ adapter memory and of the channel-sum memory (largest ASQ layer width).
    res_words : int
        Depth of the residual memory (one layer's pooled values, kept for a later residual add).

    The signed width of the values v (value buffer, residual and result memories, pooling, the
    quantizer's input) is not a parameter: it is ``golden.arith.VALUE_BITS`` (the arithmetic
    saturates to it), read-only as :attr:`value_bits`.
    """

    rows: int = 4
    cols: int = 4
    wbits: int = 4
    abits: int = 4
    frac_bits: int = arith.DEFAULT_FRAC_BITS
    max_fan_in: int = 256
    act_words: int = 64
    weight_words: int = 1024
    chan_words: int = 256
    result_words: int = 64
    max_layers: int = 8
    value_words: int = 1024
    adapter_words: int = 256
    max_channels: int = 128
    res_words: int = 1024

    def __post_init__(self):
        for name in ("rows", "cols"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise EngineFitError(f"{name} must be an integer >= 1, got {v!r}")
        arith.check_wbits(self.wbits)
        arith.check_abits(self.abits)
        arith.check_frac_bits(self.frac_bits)
        for name in ("max_fan_in", "act_words", "weight_words", "chan_words", "result_words", "max_layers",
                     "value_words", "adapter_words", "max_channels", "res_words"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise EngineFitError(f"{name} must be an integer >= 1, got {v!r}")
        space = 1 << self.addr_bits
        if self.bank_bits >= self.addr_bits:
            raise EngineFitError(f"rows {self.rows} need {self.bank_bits} bank-select bits, which leaves none of the "
                                 f"{self.addr_bits}-bit ACT address for words; rows must be at most "
                                 f"{1 << (self.addr_bits - 1)}")
        if self.act_words << self.bank_bits > space:
            raise EngineFitError(f"act_words {self.act_words} with {self.rows} banks needs more than "
                             f"{self.addr_bits} address bits; use at most {space >> self.bank_bits}")
        for name in ("weight_words", "chan_words", "result_words", "value_words", "adapter_words",
                     "max_channels", "res_words"):
            if getattr(self, name) > space:
                raise EngineFitError(f"{name} {getattr(self, name)} exceeds the {self.addr_bits}-bit host "
                                 f"address space; use at most {space}")
        if self.max_layers * DESC_STRIDE > space:
            raise EngineFitError(f"max_layers {self.max_layers} exceeds the descriptor address space; "
                             f"use at most {space // DESC_STRIDE}")
        if self.max_fan_in > (1 << DESC_BITS) * self.rows:
            raise EngineFitError(f"max_fan_in {self.max_fan_in} needs more than {1 << DESC_BITS} input tiles; "
                             f"use at most {(1 << DESC_BITS) * self.rows}")

    # --- derived ---------------------------------------------------------------
    @property
    def acc_bits(self) -> int:
        """Signed accumulator width: ``arith.accumulator_bits(max_fan_in, abits, frac_bits)``."""
        return arith.accumulator_bits(self.max_fan_in, self.abits, self.frac_bits)

    @property
    def value_bits(self) -> int:
        """Signed width of a value v: ``golden.arith.VALUE_BITS`` (fixed by the arithmetic)."""
        return arith.VALUE_BITS

    @property
    def bank_bits(self) -> int:
        """Bank-select bits of an ``ACT`` address: ``max(1, ceil(log2 R))``."""
        return max(1, math.ceil(math.log2(self.rows)))

    @property
    def data_bits(self) -> int:
        """Host data width: ``max(R*C*W, CHAN_BITS, ASQ_TABLE_BITS, ADAPTER_ACC_BITS)`` (a weight word, a
        CHAN entry, a TABLE entry, an adapter word)."""
        return max(self.rows * self.cols * self.wbits, CHAN_BITS, arith.ASQ_TABLE_BITS, arith.ADAPTER_ACC_BITS)

    @property
    def addr_bits(self) -> int:
        return 16

    @property
    def lut_entries(self) -> int:
        return 2 ** self.abits

    @property
    def lut_bits(self) -> int:
        return arith.lut_entry_bits(self.abits, self.frac_bits)

    @property
    def product_bits(self) -> int:
        """Signed product width of a PE: ``arith.product_magnitude_bits + 1``."""
        return arith.product_magnitude_bits(self.abits, self.frac_bits) + 1

    @property
    def weight_word_bits(self) -> int:
        return self.rows * self.cols * self.wbits

    def act_address(self, base: int, e: int) -> int:
        """``ACT`` host address of element ``e`` of a region based at word ``base``."""
        return ((base + e // self.rows) << self.bank_bits) | (e % self.rows)



def require_engine_params(component, params) -> None:
    """The parameter check every engine component runs before ``super().__init__()``: ``params`` must
    be an :class:`EngineParams` (TypeError otherwise). A refused component is marked deliberately
    unused, so Amaranth does not also warn that it was never elaborated."""
    if not isinstance(params, EngineParams):
        component._MustUse__silence = True
        raise TypeError(f"params must be an EngineParams, got {type(params).__name__}")

@dataclass(eq=False)
class AdapterSpec:
    """An ASQ adapter in fixed point (``golden.arith.adapter_z``): ``w1 [H, C]``, ``b1 [H]``; two layers
    with ``w2 [1, H]``, ``b2 [1]``; the hidden units (one layer: ``z`` itself) are shifted right by
    ``h_shift``; ``z_frac`` fraction bits of ``z``; ``factor`` names the tables."""

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray | None
    b2: np.ndarray | None
    z_frac: int
    factor: str
    h_shift: int = 0

    @property
    def hidden(self) -> int:
        return int(np.shape(self.w1)[0])

    def z(self, sums) -> np.ndarray:
        """``z`` ``[N]`` for per-sample channel sums ``[N, C]`` (:func:`golden.arith.adapter_z`)."""
        return arith.adapter_z(sums, self.w1, self.b1, self.w2, self.b2, int(self.h_shift))

    def words(self) -> list[int]:
        """ADAPT memory image (signed values; the host writes them as 32-bit two's complement words,
        :func:`adapt_word`): for each hidden unit ``j``: ``b1[j], w1[j, 0..C-1], w2[j]``, then ``b2``.
        A one-layer adapter is stored as a two-layer one with ``w2 = [1]``, ``b2 = 0`` (no ReLU)."""
        w1, b1 = np.asarray(self.w1, dtype=np.int64), np.asarray(self.b1, dtype=np.int64)
        w2 = np.ones((1, 1), dtype=np.int64) if self.w2 is None else np.asarray(self.w2, dtype=np.int64)
        b2 = np.zeros(1, dtype=np.int64) if self.b2 is None else np.asarray(self.b2, dtype=np.int64)
        out = []
        for j in range(w1.shape[0]):
            out += [int(b1[j])] + [int(v) for v in w1[j]] + [int(w2[0, j])]
        return out + [int(b2[0])]


@dataclass(eq=False)
class LayerSpec:
    """One convolution or fully-connected layer as the engine runs it (``docs/engine.md``; the
    arithmetic is golden.arith's hardware-sized stage arithmetic).

    ``codes``: int array (``[out, C_in, K, K]`` with ``in_shape``; ``[out, fan_in]`` fully connected)
    of POST codes already at the engine's ``wbits``. The rescale of output channel ``o`` is
    ``v = round_half_up((acc >> acc_shift) * chan_mult[o] / 2**chan_shift[o]) + chan_bias[o]``
    (``golden.arith.stage_value``; with ``input_beta`` the multiplier is first scaled by the input's
    ASQ factor, ``golden.arith.beta_multiplier``), plus the ``residual`` (``golden.arith.align_value``
    of an earlier layer's pooled values), saturated to ``VALUE_BITS`` and, with ``relu``,
    ``max(v, relu_floor)`` (``golden.arith.finish_value``). Then pooling on v: max pooling ``pool =
    (k, stride, pad)``, or ``pool_mode="sum"``: global sum pooling (``pool = (H, 1, 0)`` over the
    whole ``H x H`` map, ``golden.arith.sum_pool``). ``final`` layers output v itself. The output
    quantizer: ``clip(round_half_up(v * q_mult / 2**q_shift), out_lo, out_hi)`` (LSQ, QIL; default
    ``q_mult = 2**14``, ``q_shift = value_frac + 14``: ``round_half_up(v / 2**value_frac)``), or with
    ``adapter`` ASQ: channel sums, adapter, tables, ``golden.arith.asq_quantize``.

    ASQ prescale (``pre_mult`` and ``pre_shift``, both set or both None; only with ``adapter``): the
    pooled value is first re-expressed in the quantizer's step units, ``vq = golden.arith.prescale(v,
    pre_mult, 2**(pre_shift-1), pre_shift)`` (``pre_mult`` in 1..2**15-1, ``pre_shift`` in 1..63), and
    the channel sums, the adapter and the quantizer see ``vq``. A saved residual (a later layer's
    ``residual``) stays the pooled ``v``.
    """

    codes: np.ndarray
    chan_mult: np.ndarray | None = None   #: [out] signed, |mult| < 2**MULT_BITS
    chan_shift: np.ndarray | None = None  #: [out] 1..63
    chan_bias: np.ndarray | None = None   #: [out] signed BIAS_BITS, value units
    acc_shift: int = 0                #: a = acc >> acc_shift (|a| < 2**(RESCALE_ACC_BITS-1))
    final: bool = False
    name: str = "layer"
    in_shape: tuple | None = None     #: (C, H, W) of a convolution's input; None: fully connected
    stride: int = 1
    pad: int = 0
    groups: int = 1                   #: 1 (dense) or C_in == C_out (depthwise: codes [C, 1, K, K])
    input_beta: bool = False
    relu: bool = False
    relu_floor: int = 0
    pool: tuple | None = None         #: (k, stride, pad) pooling on v
    out_lo: int = 0
    out_hi: int | None = None
    value_frac: int = 0
    adapter: AdapterSpec | None = None
    input_from: str | None = None     #: read this earlier layer's output ("input": the network input); None: previous
    residual: tuple | None = None     #: (earlier layer, mult, shift): v += align_value(its pooled v, mult, shift)
    pool_mode: str = "max"            #: "max", or "sum" (global sum pooling, golden.arith.sum_pool)
    q_mult: int | None = None         #: non-ASQ quantizer multiplier (None: 2**14)
    q_shift: int | None = None        #: its shift (None: value_frac + 14)
    pre_mult: int | None = None       #: ASQ prescale multiplier (1..2**15-1)
    pre_shift: int | None = None      #: ASQ prescale shift (1..63); both None: no prescale

    @property
    def is_conv(self) -> bool:
        return self.in_shape is not None

    @property
    def prescaled(self) -> bool:
        """The ASQ quantizer's input is prescaled (``pre_mult``/``pre_shift`` given)."""
        return self.pre_mult is not None or self.pre_shift is not None

    def prescale(self, v):
        """The value the ASQ channel sums and quantizer see: ``golden.arith.prescale(v, pre_mult,
        2**(pre_shift-1), pre_shift)`` (round half up, saturated) with a prescale, ``v`` itself without."""
        v = np.asarray(v, dtype=np.int64)
        if not self.prescaled:
            return v
        ps = int(self.pre_shift)
        return arith.prescale(v, int(self.pre_mult), 1 << (ps - 1), ps)

    @property
    def k(self) -> int:
        return int(np.shape(self.codes)[2]) if self.is_conv else 1

    @property
    def depthwise(self) -> bool:
        return int(self.groups) != 1

    @property
    def fan_in(self) -> int:
        """Products per output: ``C_in/groups * K * K`` (fully connected: the input size)."""
        return int(np.prod(np.shape(self.codes)[1:]))

    def dense_codes(self) -> np.ndarray:
        """The codes as a dense ``[out, C_in, K, K]`` (fully connected ``[out, fan_in]``) tensor: a
        depthwise layer's are block diagonal (code 0, a zero weight, off the diagonal)."""
        codes = np.asarray(self.codes, dtype=np.int64)
        if not self.depthwise:
            return codes
        o, _, k, _ = codes.shape
        dense = np.zeros((o, o, k, k), dtype=np.int64)
        dense[np.arange(o), np.arange(o)] = codes[:, 0]
        return dense

    @property
    def fan_out(self) -> int:
        """Output channels (fully connected: outputs)."""
        return int(np.shape(self.codes)[0])

    @property
    def in_chw(self) -> tuple:
        return tuple(int(v) for v in self.in_shape) if self.is_conv else (self.fan_in, 1, 1)

    @property
    def conv_chw(self) -> tuple:
        """Shape of the convolution's output (before pooling)."""
        c, h, w = self.in_chw
        k = self.k
        return (self.fan_out, (h + 2 * self.pad - k) // self.stride + 1, (w + 2 * self.pad - k) // self.stride + 1)

    @property
    def pool_kspd(self) -> tuple:
        return tuple(int(v) for v in self.pool) if self.pool is not None else (1, 1, 0)

    @property
    def out_chw(self) -> tuple:
        """Shape of the layer's output (after pooling)."""
        c, h, w = self.conv_chw
        pk, ps, pp = self.pool_kspd
        return (c, (h + 2 * pp - pk) // ps + 1, (w + 2 * pp - pk) // ps + 1)

    @property
    def in_size(self) -> int:
        return int(np.prod(self.in_chw))

    @property
    def out_size(self) -> int:
        return int(np.prod(self.out_chw))

    def chan_params(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(mult, shift, bias)`` per output channel, int64 (the CHAN word's fields)."""
        return tuple(np.asarray(a, dtype=np.int64).reshape(-1) for a in
                     (self.chan_mult, self.chan_shift, self.chan_bias))

    @property
    def pool_shift(self) -> int:
        """POOL_SHIFT: ``golden.arith.sum_pool_shift`` of the convolution's positions for sum pooling
        (``pool_shift - SUM_POOL_GUARD``, at least 0), else 0."""
        return arith.sum_pool_shift(self.conv_chw[1] * self.conv_chw[2]) if self.pool_mode == "sum" else 0

    @property
    def sum_shift(self) -> int:
        """SUM_SHIFT: ``golden.arith.pool_shift`` of the pooled positions for an ASQ layer, else 0."""
        return arith.pool_shift(self.out_chw[1] * self.out_chw[2]) if self.adapter is not None else 0

    def quant_params(self) -> tuple[int, int, int]:
        """``(lo, hi, value_frac)`` of the output quantizer."""
        return int(self.out_lo), int(self.out_hi), int(self.value_frac)

    def quant_mult_shift(self) -> tuple[int, int]:
        """``(M, S)`` of a non-ASQ quantizer ``clip(round_half_up(v * M / 2**S), lo, hi)``: by default the
        identity ``(2**14, value_frac + 14)``."""
        vf = int(self.value_frac)
        return (1 << Q_MULT_FRAC if self.q_mult is None else int(self.q_mult),
                vf + Q_MULT_FRAC if self.q_shift is None else int(self.q_shift))


@dataclass(frozen=True)
class _Layout:
    """Where one layer lives in the engine: the descriptor's values (:class:`DescField` order)."""

    values: tuple

    def __getattr__(self, name):
        if name.startswith("__") or name == "values":      # pickling looks these up before values exists
            raise AttributeError(name)
        try:
            return self.values[DescField[name.upper()]]
        except KeyError:
            raise AttributeError(name) from None

    def fields(self) -> list[int]:
        return list(self.values)


#: Descriptor fields holding signed values (written as 16-bit two's complement).
SIGNED_FIELDS = (DescField.ROW_STEP, DescField.KROW_JUMP, DescField.PIX0, DescField.RELU_FLOOR)


@dataclass(frozen=True)
class Pass:
    """One engine run of a program: descriptor slots ``first`` .. ``stop - 1`` after ``writes``."""

    first: int
    stop: int
    writes: list


@dataclass
class Program:
    """A model laid out for one engine: configuration writes, I/O addresses, a reference.

    Attributes
    ----------
    params : EngineParams
    layers : list of LayerSpec
    layouts : list
        Descriptor values of each layer (``fields()`` in :class:`DescField` order).
    config_writes : list of (sel, addr, data)
        Weights, channel parameters, adapters, tables, descriptors and ``n_layers``: written once.
    input_base : int
        Activation word of the input region; ``input_size`` its element count.
    slots, slot_layer : list
        Descriptor slots in run order (``layouts`` holds each layer's first): a layer too large for
        the value buffer or the weight memory runs as several output-channel parts.
    passes : list of Pass
        Runs of consecutive slots whose weights fit the weight memory together. One pass: the
        weights are in ``config_writes``. More: before each pass the host writes its
        ``writes`` (its weight tiles, ``FIRST_LAYER``, ``N_LAYERS``) and starts the engine again;
        activations stay on chip between passes. A sample's cycles are the sum over its passes.
    kept : list of bool
        Per layer: its outputs are still in the activation memory after a run. All, unless the
        regions did not fit side by side and were reused (see ``_act_regions``); only kept layers
        are read back (:meth:`output_reads`; :meth:`decode_outputs` gives None for the others).
    """

    params: EngineParams
    layers: list
    layouts: list
    config_writes: list = field(default_factory=list)
    input_base: int = 0
    input_size: int = 0
    slots: list = field(default_factory=list)
    slot_layer: list = field(default_factory=list)
    passes: list = field(default_factory=list)
    kept: list = field(default_factory=list)

    @property
    def needs_beta(self) -> bool:
        """The first layer's input codes come from an ASQ quantizer: each sample brings its beta."""
        return bool(self.layers[0].input_beta)

    # --- per-sample host traffic --------------------------------------------------
    def _check_input(self, x) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 1 or x.shape[0] != self.input_size:
            raise EngineFitError(f"input must be a 1-D array of {self.input_size} activation codes "
                             f"(C*H*W in CHW order for a convolution), got shape {x.shape}")
        if not np.issubdtype(x.dtype, np.integer):
            raise EngineFitError(f"input codes must be integers, got dtype {x.dtype}")
        x = x.astype(np.int64)
        top = 2 ** self.params.abits - 1
        if np.any((x < 0) | (x > top)):
            raise EngineFitError(f"input codes must lie in 0..{top} ({self.params.abits}-bit activations)")
        return x

    def _check_beta(self, beta) -> int | None:
        """The sample's input factor (fixed point, ``2**-ASQ_BETA_FRAC``): a positive integer whose
        ``normalize_fixed`` form exists and keeps layer 0's combined rescale shifts >= 1."""
        if not self.needs_beta:
            if beta is not None:
                raise EngineFitError("this program's input is not ASQ-quantized; pass beta=None")
            return None
        first = self.layers[0]
        readers = [layer for i, layer in enumerate(self.layers)       # every layer reading the network input
                   if layer.input_beta and (i == 0 or layer.input_from == "input")]
        top = min(_host_beta_max(layer) for layer in readers)
        if beta is None or isinstance(beta, bool) or not isinstance(beta, (int, np.integer)) or not 0 < int(beta) <= top:
            raise EngineFitError(f"layer {first.name} takes ASQ codes: pass the sample's beta (fixed point, "
                                 f"2**-{arith.ASQ_BETA_FRAC}) as an integer in 1..{top}, got {beta!r}")
        return int(beta)

    def _addresses(self, base: int, chw: tuple) -> list[int]:
        """``ACT`` addresses of a CHW tensor stored HWC with ``ceil(C/R)`` words per pixel, CHW order."""
        c, h, w = chw
        R, bb = self.params.rows, self.params.bank_bits
        ct = _ceil(c, R)
        return [((base + (y * w + x) * ct + ch // R) << bb) | (ch % R)
                for ch in range(c) for y in range(h) for x in range(w)]

    def input_writes(self, x_codes, beta=None) -> list[tuple[int, int, int]]:
        """Host writes that place one sample's input codes (CHW order) and, for an ASQ input, its beta."""
        x = self._check_input(x_codes)
        beta = self._check_beta(beta)
        addrs = self._addresses(self.input_base, self.layers[0].in_chw)
        writes = [(int(Sel.ACT), a, int(v)) for a, v in zip(addrs, x)]
        if beta is not None:
            writes.append((int(Sel.CTRL), int(Ctrl.BETA), factor_word(beta)))
        return writes

    def output_reads(self) -> list[tuple[int, int]]:
        """Reads of every kept layer's outputs in layer order, each in CHW order (RESULT for the final layer)."""
        reads = []
        for layer, lay, keep in zip(self.layers, self.layouts, self.kept or [True] * len(self.layers)):
            if not keep:
                continue
            c, h, w = layer.out_chw
            if layer.final:       # RESULT index pixel * n_out + o
                reads += [(int(Sel.RESULT), (y * w + x) * c + o) for o in range(c) for y in range(h)
                          for x in range(w)]
            else:
                reads += [(int(Sel.ACT), a) for a in self._addresses(lay.out_base, layer.out_chw)]
        return reads

    def decode_outputs(self, values) -> list[np.ndarray]:
        """Split raw read data (in :meth:`output_reads` order) into one int64 array per layer (CHW, flat;
        None for a layer that is not :attr:`kept`)."""
        values = [int(v) for v in values]
        kept = self.kept or [True] * len(self.layers)
        sizes = [layer.out_size if keep else 0 for layer, keep in zip(self.layers, kept)]
        if len(values) != sum(sizes):
            raise EngineFitError(f"expected {sum(sizes)} read values, got {len(values)}")
        db = self.params.data_bits
        out, pos = [], 0
        for layer, n, keep in zip(self.layers, sizes, kept):
            if not keep:
                out.append(None)             # its region was reused by a later layer
                continue
            chunk = values[pos:pos + n]
            pos += n
            if layer.final:
                chunk = [v - (1 << db) if v >> (db - 1) & 1 else v for v in chunk]
            out.append(np.array(chunk, dtype=np.int64))
        return out

    def reference_run(self, x_codes, beta=None) -> tuple[list[np.ndarray], list]:
        """Per-layer outputs (CHW, flat) and the beta each layer's quantizer chose (the table's fixed-point
        ``beta``, ``2**-ASQ_BETA_FRAC``; None for non-ASQ), computed with :mod:`golden.arith`'s
        hardware-sized stage arithmetic (``stage_value``, ``finish_value``, ``pool2d``/``sum_pool``,
        ``prescale``, ``asq_sums``, ``adapter_z``, ``asq_quantize``). ``beta``: the sample's input factor
        when layer 0 reads ASQ codes."""
        p = self.params
        x0 = self._check_input(x_codes)
        beta0 = self._check_beta(beta)
        outs, betas, saved, by_name = [], [], {}, {}
        for i, layer in enumerate(self.layers):
            src = _source_index(self.layers, i, by_name)
            x, beta = (x0, beta0) if src < 0 else (outs[src], betas[src])
            cols = _patches(x.reshape(layer.in_chw), layer.k, layer.stride, layer.pad)   # [pixels, fan_in]
            codes = layer.dense_codes().reshape(layer.fan_out, -1)
            acc = arith.post_product(cols[:, None, :], codes[None, :, :], p.wbits, p.abits,
                                     p.frac_bits).sum(axis=2).T[None]                  # [1, out, pixels]
            mult, shift, bias = layer.chan_params()
            v = arith.stage_value(acc, mult, shift, bias, int(layer.acc_shift),
                                  np.array([beta]) if layer.input_beta else None)
            res = None
            if layer.residual is not None:
                name, rm, rs = layer.residual
                r = saved[by_name[name]]                                              # CHW
                res = arith.align_value(r.reshape(1, r.shape[0], -1), int(rm), int(rs))
            v = arith.finish_value(v, res, int(layer.relu_floor) if layer.relu else None)
            _, oh, ow = layer.conv_chw
            v = v.reshape(layer.fan_out, oh, ow)                                       # CHW
            if layer.pool_mode == "sum":
                v = arith.sum_pool(v[None])[0]
            elif layer.pool is not None:
                v = arith.pool2d(v, *layer.pool_kspd, mode="max")
            saved[i] = v
            if layer.final:
                y, b = v, None
            else:
                lo, hi, vf = layer.quant_params()
                if layer.adapter is not None:
                    a = layer.adapter
                    vq = layer.prescale(v)          # the ASQ prescale (saved[i] keeps the pooled v)
                    z = a.z(arith.asq_sums(vq[None]))
                    idx = int(arith.asq_z_index(z, int(a.z_frac))[0])
                    beta_t, inv_t = arith.asq_tables(a.factor)
                    b = int(beta_t[idx])
                    y = np.clip(arith.asq_quantize(vq, int(inv_t[idx]), vf, hi), lo, hi)
                else:
                    b = None
                    qm, qs = layer.quant_mult_shift()
                    y = np.clip(arith.shift_round(v * qm, qs), lo, hi)   # == quantize_value(v, vf, ...) for LSQ
            outs.append(np.asarray(y, dtype=np.int64).reshape(-1))
            betas.append(b)
            by_name[layer.name] = i
        return outs, betas

    def reference(self, x_codes, beta=None) -> list[np.ndarray]:
        """Per-layer outputs (CHW, flat) computed directly with :mod:`golden.arith`."""
        return self.reference_run(x_codes, beta)[0]


def _patches(x: np.ndarray, k: int, stride: int, pad: int) -> np.ndarray:
    """``[C, H, W]`` codes -> ``[out_h*out_w, C*k*k]`` receptive fields (zero padding), row-major pixels."""
    c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    rows = [xp[:, y * stride:y * stride + k, xx * stride:xx * stride + k].reshape(-1)
            for y in range(oh) for xx in range(ow)]
    return np.stack(rows)


def _source_index(layers, i: int, by_name: dict) -> int:
    """Index of the layer whose output layer ``i`` reads (-1: the network input)."""
    frm = layers[i].input_from
    if frm is None:
        return i - 1
    if frm == "input":
        return -1
    return by_name[frm]


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _pack_tile(codes: np.ndarray, ot: int, it: int, ct_count: int, p: EngineParams, ct_base: int = 0) -> int:
    """Weight word of tile ``(ot, it)``; ``codes`` is ``[out, C_in, K, K]`` and input tile ``it`` is
    ``(ky*K + kx)*CT + ct``: row ``r`` holds input channel ``(ct_base + ct)*R + r`` at tap ``(ky, kx)``
    (``ct_base``: the output tile's first channel tile, depthwise layers)."""
    word = 0
    fan_out, cin, k, _ = codes.shape
    tap, ct = divmod(it, ct_count)
    ky, kx = divmod(tap, k)
    for r in range(p.rows):
        ci = (ct_base + ct) * p.rows + r
        for c in range(p.cols):
            o = ot * p.cols + c
            code = int(codes[o, ci, ky, kx]) if (ci < cin and o < fan_out) else 0
            word |= code << ((r * p.cols + c) * p.wbits)
    return word


def _engine_codes(layer: LayerSpec, prev: LayerSpec | None, R: int) -> np.ndarray:
    """The layer's codes as ``[out, C_in, K, K]`` in the engine's input order.

    A fully-connected layer is a 1x1 convolution. After a convolution with an ``H x W`` output it
    reads that output where the convolution wrote it (HWC, ``ceil(C/R)*R`` channel slots a pixel),
    so its columns are permuted from PyTorch's CHW flattening to that order (zero in pad slots).
    """
    codes = np.asarray(layer.codes, dtype=np.int64)
    if layer.is_conv:
        return layer.dense_codes()
    if prev is not None and prev.out_chw[1] * prev.out_chw[2] > 1:
        c, h, w = prev.out_chw
        slots = _ceil(c, R) * R
        out = np.zeros((layer.fan_out, h * w * slots), dtype=np.int64)
        for ch in range(c):
            for y in range(h):
                for x in range(w):
                    out[:, (y * w + x) * slots + ch] = codes[:, ch * h * w + y * w + x]
        return out[:, :, None, None]
    return codes[:, :, None, None]


def _fits_signed(v, bits: int) -> bool:
    v = np.asarray(v, dtype=object)
    return bool(np.all((v >= -(1 << (bits - 1))) & (v < (1 << (bits - 1)))))


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _min_beta_shift(factor: str) -> int:
    """The smallest ``beta_shift`` of the factor table: that of the largest beta."""
    return int(arith.factor_words(factor)[1].min())


def _host_beta_max(layer: LayerSpec) -> int:
    """Largest fixed-point input factor layer 0 accepts: its ``normalize_fixed`` shift ``bs`` must keep
    ``min(chan_shift) + bs - MANT >= 1`` and ``bs >= 1`` (``MANT = FACTOR_MANT_BITS``), i.e. the
    rounded mantissa's exponent ``e = ASQ_BETA_FRAC - bs`` at most ``e_max`` (>= 1: shifts are >= 1)."""
    B = arith.FACTOR_MANT_BITS
    e_max = min(int(np.min(layer.chan_params()[1])) - B + arith.ASQ_BETA_FRAC - 1, arith.ASQ_BETA_FRAC - 1)
    return (1 << (e_max + B)) - (1 << (e_max - 1)) - 1     # above: rounds up to 2**(e_max+B), one more shift


def _check_layer(l: int, layer: LayerSpec, p: EngineParams, prev: LayerSpec | None, last: bool,
                 factor: str | None) -> None:
    """Check one layer (``prev``: the layer whose output it reads; ``factor``: the program's ASQ factor,
    None if no layer is ASQ). Values saturate (``golden.arith.finish_value``), so no value range needs a
    proof; what is checked is every field against its register and the rescale's operand width."""
    if not isinstance(layer, LayerSpec):
        raise EngineFitError(f"layer {l} is not a LayerSpec")
    where = f"layer {layer.name}"
    codes = np.asarray(layer.codes)
    if not isinstance(layer.groups, (int, np.integer)) or layer.groups < 1:
        raise EngineFitError(f"{where}: groups must be an integer >= 1, got {layer.groups!r}")
    if layer.depthwise and not (layer.is_conv and codes.ndim == 4 and codes.shape[1] == 1
                                and layer.groups == codes.shape[0] == layer.in_shape[0]):
        raise EngineFitError(f"{where}: groups={layer.groups}: the engine runs dense (groups=1) and depthwise "
                         f"convolutions (groups = C_in = C_out, codes [C, 1, K, K]); split other grouped "
                         f"convolutions into one layer per group")
    if layer.is_conv:
        if codes.ndim != 4 or codes.shape[2] != codes.shape[3] or min(codes.shape) < 1:
            raise EngineFitError(f"{where}: convolution codes must be a non-empty [out, C_in, K, K] array, "
                             f"got shape {codes.shape}")
        cin = codes.shape[1] * int(layer.groups)
        if len(layer.in_shape) != 3 or layer.in_shape[0] != cin or min(layer.in_shape) < 1:
            raise EngineFitError(f"{where}: in_shape {layer.in_shape} must be (C_in={cin}, H, W)")
        if not (isinstance(layer.stride, int) and layer.stride >= 1 and isinstance(layer.pad, int)
                and 0 <= layer.pad < codes.shape[2]):
            raise EngineFitError(f"{where}: stride must be >= 1 and padding in 0..K-1, got {layer.stride}, {layer.pad}")
        if min(layer.conv_chw[1:]) < 1:
            raise EngineFitError(f"{where}: a {codes.shape[2]}x{codes.shape[2]} kernel does not fit the "
                             f"{layer.in_shape[1]}x{layer.in_shape[2]} input")
    elif codes.ndim != 2 or codes.shape[0] < 1 or codes.shape[1] < 1:
        raise EngineFitError(f"{where}: codes must be a non-empty [fan_out, fan_in] array, got shape {codes.shape}")
    if not np.issubdtype(codes.dtype, np.integer):
        raise EngineFitError(f"{where}: codes must be integers, got dtype {codes.dtype}")
    fan_out, fan_in = layer.fan_out, layer.fan_in
    if prev is not None:
        prev_chw = prev.out_chw
        if layer.is_conv and tuple(layer.in_shape) != tuple(prev_chw):
            raise EngineFitError(f"{where}: input shape {tuple(layer.in_shape)} does not match the previous "
                             f"layer's output {tuple(prev_chw)}")
        if not layer.is_conv and fan_in != int(np.prod(prev_chw)):
            raise EngineFitError(f"{where}: fan_in {fan_in} does not match the previous layer's "
                             f"{int(np.prod(prev_chw))} outputs")
        if bool(layer.input_beta) != (prev.adapter is not None):
            raise EngineFitError(f"{where}: input_beta must be set exactly when the previous layer's quantizer "
                             f"is ASQ (it has an adapter)")
    if np.any((codes < 0) | (codes >= 2 ** p.wbits)):
        bad = int(codes.max()) if codes.max() >= 2 ** p.wbits else int(codes.min())
        raise EngineFitError(f"{where}: POST code {bad} does not fit the engine's {p.wbits}-bit PEs "
                         f"(codes must lie in 0..{2 ** p.wbits - 1}); widen the codes with "
                         f"golden.arith.widen_post_code or regenerate with a larger --wbits")
    if fan_in > p.max_fan_in:
        raise EngineFitError(f"{where}: fan_in {fan_in} exceeds max_fan_in {p.max_fan_in} of the engine; "
                         f"regenerate with --max-fan-in {fan_in}")
    if layer.pool is not None:
        pk, ps, pp = layer.pool_kspd
        if not (pk >= 1 and ps >= 1 and 0 <= pp < pk) or min(layer.out_chw[1:]) < 1:
            raise EngineFitError(f"{where}: pooling {layer.pool} must have k >= 1, stride >= 1, 0 <= pad < k "
                             f"and fit the {layer.conv_chw[1]}x{layer.conv_chw[2]} map")
        if layer.final:
            raise EngineFitError(f"{where}: the final layer cannot pool (its values go straight to RESULT); "
                             f"end the model with a fully-connected layer")
    if layer.prescaled:
        pm, ps = layer.pre_mult, layer.pre_shift
        if pm is None or ps is None:
            raise EngineFitError(f"{where}: the ASQ prescale needs both pre_mult and pre_shift, got pre_mult {pm!r} "
                             f"and pre_shift {ps!r}")
        if layer.final or layer.adapter is None:
            raise EngineFitError(f"{where}: pre_mult/pre_shift prescale the input of an ASQ quantizer, but the layer "
                             f"has {'no quantizer (final)' if layer.final else 'no adapter'}; drop them")
        if not (_is_int(pm) and 1 <= pm < 1 << arith.MULT_BITS):
            raise EngineFitError(f"{where}: prescale multiplier pre_mult {pm!r} must be an integer in "
                                 f"1..{(1 << arith.MULT_BITS) - 1}")
        if not (isinstance(ps, (int, np.integer)) and not isinstance(ps, bool) and 1 <= ps <= 63):
            raise EngineFitError(f"{where}: prescale shift pre_shift {ps!r} must be an integer in 1..63")
    # --- the rescale: fields against their registers, the accumulator operand against its width ------
    for nm in ("chan_mult", "chan_shift", "chan_bias"):
        a = np.asarray(getattr(layer, nm))
        if a.shape != (fan_out,) or not np.issubdtype(a.dtype, np.integer):
            raise EngineFitError(f"{where}: {nm} must be an integer array of shape ({fan_out},), got "
                                 f"{a.dtype} {a.shape}")
    mult, shift, bias = layer.chan_params()
    mlim = 1 << arith.MULT_BITS
    if np.any(np.abs(mult) >= mlim):
        o = int(np.argmax(np.abs(mult) >= mlim))
        raise EngineFitError(f"{where}: output {o}: rescale multiplier {int(mult[o])} outside +-{mlim - 1} (a "
                             f"{CHAN_MULT_BITS}-bit signed operand); re-export the model")
    if np.any((shift < 1) | (shift >= 1 << CHAN_SHIFT_BITS)):
        o = int(np.argmax((shift < 1) | (shift >= 1 << CHAN_SHIFT_BITS)))
        raise EngineFitError(f"{where}: output {o}: rescale shift {int(shift[o])} outside "
                             f"1..{(1 << CHAN_SHIFT_BITS) - 1}; re-export the model")
    if not _fits_signed(bias, arith.BIAS_BITS):
        o = int(np.argmax(np.abs(bias) >= 1 << (arith.BIAS_BITS - 1)))
        raise EngineFitError(f"{where}: output {o}: bias {int(bias[o])} does not fit the engine's "
                             f"{arith.BIAS_BITS}-bit signed biases (value units); re-export the model")
    s_acc = layer.acc_shift
    if not (_is_int(s_acc) and 0 <= s_acc < 1 << CHAN_SHIFT_BITS):
        raise EngineFitError(f"{where}: acc_shift {s_acc!r} must be an integer in 0..{(1 << CHAN_SHIFT_BITS) - 1}")
    # the accumulators' range for this layer's weights and any input code (fan_in <= max_fan_in keeps them
    # inside the engine's acc_bits accumulators): a = acc >> acc_shift must fit RESCALE_ACC_BITS
    prod = arith.post_product(2 ** p.abits - 1, codes.astype(np.int64).reshape(fan_out, -1), p.wbits, p.abits,
                              p.frac_bits)
    bound = max(int(np.where(prod > 0, prod, 0).sum(axis=1).max()), -int(np.where(prod < 0, prod, 0).sum(axis=1).min()))
    alim = 1 << (arith.RESCALE_ACC_BITS - 1)
    if bound >> int(s_acc) >= alim or -(-bound >> int(s_acc)) > alim:
        raise EngineFitError(f"{where}: accumulators up to +-{bound} leave the rescale's {arith.RESCALE_ACC_BITS}-bit "
                             f"operand after acc_shift {s_acc}; use acc_shift {arith.acc_shift_for(bound)}")
    if layer.input_beta and prev is not None and prev.adapter is not None:
        # the factor comes from prev's table (the host's input factor is checked per sample: _check_beta)
        in_factor = prev.adapter.factor
        bs = _min_beta_shift(in_factor)
        low = shift + bs - arith.FACTOR_MANT_BITS
        if np.any(low < 1):
            o = int(np.argmax(low < 1))
            raise EngineFitError(f"{where}: output {o}: rescale shift {int(shift[o])} plus the input factor's "
                                 f"smallest shift {bs} less {arith.FACTOR_MANT_BITS} is {int(low[o])} < 1 (the "
                                 f"largest {in_factor} beta); the stage's scale is too large, re-export "
                                 f"the model")
    if layer.relu and not (_is_int(layer.relu_floor)
                           and -(1 << (DESC_BITS - 1)) <= int(layer.relu_floor) < (1 << (DESC_BITS - 1))):
        raise EngineFitError(f"{where}: relu_floor {layer.relu_floor} does not fit a {DESC_BITS}-bit signed field "
                             f"(the values' range); re-export the model")
    if layer.residual is not None:
        _, rm, rs = layer.residual
        if not (_is_int(rm) and 1 <= rm < mlim and _is_int(rs) and 1 <= rs < 1 << CHAN_SHIFT_BITS):
            raise EngineFitError(f"{where}: residual alignment (mult {rm!r}, shift {rs!r}) must have mult in "
                                 f"1..{mlim - 1} and shift in 1..{(1 << CHAN_SHIFT_BITS) - 1}")
    if layer.pool_mode not in ("max", "sum"):
        raise EngineFitError(f"{where}: pool_mode {layer.pool_mode!r} must be 'max' or 'sum'")
    if layer.pool_mode == "sum":
        _, ch, cw = layer.conv_chw
        if layer.pool is None or ch != cw or layer.pool_kspd[0] != ch or layer.pool_kspd[2] != 0:
            raise EngineFitError(f"{where}: pool_mode 'sum' is global sum pooling: it needs pool=({ch}, {ch}, 0) over "
                                 f"the whole {ch}x{cw} map, got {layer.pool}")
    if layer.final:
        if not last:
            raise EngineFitError(f"{where}: only the last layer may be final (its outputs go to RESULT, "
                             f"which no layer can read)")
        if layer.out_size > p.result_words:
            raise EngineFitError(f"{where}: {layer.out_size} outputs exceed result_words {p.result_words}; "
                             f"regenerate with --result-words {layer.out_size}")
        return
    lo, hi, vf = layer.quant_params()
    if not (0 <= lo <= hi <= 2 ** p.abits - 1):
        raise EngineFitError(f"{where}: output codes {lo}..{hi} do not fit the engine's unsigned {p.abits}-bit "
                         f"activations; regenerate with a larger --abits")
    if not 0 <= vf <= 63 - arith.ASQ_BETA_FRAC:
        raise EngineFitError(f"{where}: value_frac {vf} outside 0..{63 - arith.ASQ_BETA_FRAC}")
    a = layer.adapter
    if a is not None and (layer.q_mult is not None or layer.q_shift is not None):
        raise EngineFitError(f"{where}: an ASQ quantizer takes its multiplier from the factor table; drop q_mult/q_shift")
    qm, qs = layer.quant_mult_shift()
    if not (1 <= qm < mlim and 1 <= qs < 1 << CHAN_SHIFT_BITS):
        raise EngineFitError(f"{where}: quantizer multiplier {qm} / shift {qs} outside 1..{mlim - 1} / "
                             f"1..{(1 << CHAN_SHIFT_BITS) - 1}")
    if a is None:
        return
    if a.factor not in arith.ASQ_FACTORS:
        raise EngineFitError(f"{where}: ASQ factor {a.factor!r} has no table; use one of {arith.ASQ_FACTORS}")
    w1 = np.asarray(a.w1)
    if w1.ndim != 2 or w1.shape[1] != fan_out or np.shape(a.b1) != (w1.shape[0],):
        raise EngineFitError(f"{where}: adapter w1 must be [hidden, {fan_out}] with b1 [hidden], got "
                         f"{w1.shape} and {np.shape(a.b1)}")
    if a.w2 is None and w1.shape[0] != 1:
        raise EngineFitError(f"{where}: a one-layer adapter has one output row, got {w1.shape[0]}")
    if a.w2 is not None and (np.shape(a.w2) != (1, w1.shape[0]) or np.shape(a.b2) != (1,)):
        raise EngineFitError(f"{where}: adapter w2 must be [1, {w1.shape[0]}] and b2 [1]")
    ws = [w1] + ([np.asarray(a.w2)] if a.w2 is not None else [])
    if not all(np.issubdtype(w.dtype, np.integer) and _fits_signed(w, arith.ADAPTER_WEIGHT_BITS) for w in ws):
        raise EngineFitError(f"{where}: adapter weights must be integers that fit {arith.ADAPTER_WEIGHT_BITS}-bit "
                             f"signed words; re-export the model")
    bs = [np.asarray(a.b1)] + ([np.asarray(a.b2)] if a.w2 is not None else [])
    if not all(np.issubdtype(b.dtype, np.integer) and _fits_signed(b, arith.ADAPTER_ACC_BITS) for b in bs):
        raise EngineFitError(f"{where}: adapter biases must be integers that fit {arith.ADAPTER_ACC_BITS}-bit "
                             f"signed words; re-export the model")
    if not (_is_int(a.h_shift) and 0 <= a.h_shift < arith.ADAPTER_ACC_BITS):
        raise EngineFitError(f"{where}: adapter h_shift {a.h_shift!r} must be an integer in "
                             f"0..{arith.ADAPTER_ACC_BITS - 1}")
    if not (_is_int(a.z_frac) and arith.ASQ_Z_FRAC <= int(a.z_frac) <= arith.ASQ_Z_FRAC + 63):
        raise EngineFitError(f"{where}: adapter z_frac {a.z_frac} gives Z_SHIFT = z_frac - {arith.ASQ_Z_FRAC} "
                             f"outside 0..63; the engine only rounds z down to the table grid")
    if fan_out > p.max_channels:
        raise EngineFitError(f"{where}: {fan_out} channels exceed max_channels {p.max_channels} (the ASQ "
                         f"channel-sum memory); regenerate with --max-channels {fan_out}")
    # the adapter's registers: S is a saturated VALUE_BITS sum, H and Z are ADAPTER_ACC_BITS, h (and the
    # one-layer z) is the 16-bit operand of the adapter's multiplier
    slim, acc_lim = 1 << (arith.VALUE_BITS - 1), 1 << (arith.ADAPTER_ACC_BITS - 1)
    h_hi = np.abs(w1.astype(object)).sum(axis=1) * slim + np.asarray(a.b1).astype(object)
    h_lo = -np.abs(w1.astype(object)).sum(axis=1) * slim + np.asarray(a.b1).astype(object)
    if max(h_hi) >= acc_lim or min(h_lo) < -acc_lim:
        raise EngineFitError(f"{where}: adapter hidden sums H (up to +-{max(max(h_hi), -min(h_lo))} for 16-bit "
                             f"channel sums) can leave the engine's {arith.ADAPTER_ACC_BITS}-bit accumulators; "
                             f"re-export the adapter with smaller weights")
    relu_h = a.w2 is not None
    h_top, h_bot = max(h_hi), (0 if relu_h else min(h_lo))
    need = 0
    while (h_top >> need) >= slim or (h_bot >> need) < -slim:
        need += 1
    if int(a.h_shift) < need:
        raise EngineFitError(f"{where}: adapter hidden units h = H >> h_shift (up to {h_top}) leave the "
                             f"{arith.VALUE_BITS}-bit multiplier operand with h_shift {a.h_shift}; use h_shift {need}")
    if relu_h:
        hmax = h_top >> int(a.h_shift)
        zmax = sum(abs(int(v)) for v in np.asarray(a.w2).reshape(-1)) * hmax + abs(int(np.asarray(a.b2)[0]))
        if zmax >= acc_lim:
            raise EngineFitError(f"{where}: adapter output z (up to +-{zmax}) can leave the engine's "
                                 f"{arith.ADAPTER_ACC_BITS}-bit accumulator; re-export the adapter")


def build_program(params: EngineParams, layers: list[LayerSpec]) -> Program:
    """Lay ``layers`` out in an engine with ``params``; check that everything fits.

    Allocation: activation region 0 (word 0) holds the input, then one region per non-final layer
    (its pooled output, ``ceil(C/R)`` words a pixel) so that every layer's outputs can be read back
    after a run -- or, when they do not fit side by side, regions reused once read (``_act_regions``). Weight tiles are packed layer after layer (tile ``(ot, it)`` at ``w_base + ot*n_it
    + it``, padded with code 0); CHAN entries and adapter words layer after layer; the factor tables
    once if any layer is ASQ (all ASQ layers must share one factor).

    Raises
    ------
    EngineFitError
        (an InputError and ValueError) naming the layer and what to change, if anything does not fit.
    """
    if not isinstance(params, EngineParams):
        raise EngineFitError(f"params must be an EngineParams, got {type(params).__name__}")
    layers = list(layers)
    p = params
    if not layers:
        raise EngineFitError("a program needs at least one layer")
    if len(layers) > p.max_layers:
        raise EngineFitError(f"{len(layers)} layers exceed max_layers {p.max_layers} of the engine; "
                         f"regenerate with --max-layers {len(layers)}")
    names = [getattr(l, "name", None) for l in layers]
    if len(set(names)) != len(names):
        raise EngineFitError(f"layer names must be unique, got {names}")
    factors = sorted({l.adapter.factor for l in layers if isinstance(l, LayerSpec) and l.adapter is not None})
    if len(factors) > 1:
        raise EngineFitError(f"ASQ layers use the factors {factors}; the engine holds one factor table")
    factor = factors[0] if factors else None
    # sources: which earlier layer each layer reads, and whose values it adds (one saved map at a time)
    index, sources, saves = {}, [], set()
    for l, layer in enumerate(layers):
        if not isinstance(layer, LayerSpec):
            raise EngineFitError(f"layer {l} is not a LayerSpec")
        frm = layer.input_from
        if frm is None or frm == "input":
            src = l - 1 if frm is None else -1
        elif frm not in index:
            raise EngineFitError(f"layer {layer.name}: input_from {frm!r} names no earlier layer (use 'input' for the "
                             f"network input)")
        else:
            src = index[frm]
        if src >= 0 and layers[src].final:
            raise EngineFitError(f"layer {layer.name}: reads layer {layers[src].name}, whose values go to RESULT")
        if l > 0 and src < 0 and layer.in_chw != layers[0].in_chw:
            raise EngineFitError(f"layer {layer.name}: reads the network input {layers[0].in_chw}, but its input shape "
                             f"is {layer.in_chw}")
        if l > 0 and src < 0 and bool(layer.input_beta) != bool(layers[0].input_beta):
            raise EngineFitError(f"layer {layer.name}: reads the network input, so input_beta must be "
                                 f"{bool(layers[0].input_beta)} like layer {layers[0].name}'s")
        if layer.residual is not None:
            rname = layer.residual[0]
            if rname not in index:
                raise EngineFitError(f"layer {layer.name}: residual {rname!r} names no earlier layer")
            r = index[rname]
            if layers[r].final or layers[r].out_chw != layer.conv_chw:
                raise EngineFitError(f"layer {layer.name}: residual from layer {rname} of shape {layers[r].out_chw} "
                                 f"cannot be added to its {layer.conv_chw} values")
            between = [layers[j].name for j in range(r + 1, l) if j in saves]
            if between:
                raise EngineFitError(f"layer {layer.name}: residual from layer {rname}, but layer {between[0]} saves "
                                 f"its values in between (the engine keeps one saved map)")
            saves.add(r)
            if layers[r].out_size > p.res_words:
                raise EngineFitError(f"layer {layer.name}: residual from layer {rname} needs {layers[r].out_size} "
                                 f"words, more than res_words {p.res_words}; regenerate with --res-words "
                                 f"{layers[r].out_size}")
        _check_layer(l, layer, p, layers[src] if src >= 0 else None, l == len(layers) - 1, factor)
        index[layer.name] = l
        sources.append(src)

    R, C = p.rows, p.cols
    input_size = layers[0].in_size
    c0, h0, w0 = layers[0].in_chw
    act_next = h0 * w0 * _ceil(c0, R)
    if act_next > p.act_words:
        raise EngineFitError(f"the input needs {act_next} words per activation bank, more than act_words "
                         f"{p.act_words}; regenerate with --act-words {act_next}")
    region_bases, kept = _act_regions(layers, sources, p)
    c_next, a_next = 0, 0
    slots, slot_layer, slot_tiles, out_bases, first_slot = [], [], [], [], []
    chan_writes, adapt_writes = [], []
    mask16 = (1 << DESC_BITS) - 1
    for l, layer in enumerate(layers):
        where = f"layer {layer.name}"
        src = sources[l]
        prev = layers[src] if src >= 0 else None
        in_base = out_bases[src] if src >= 0 else 0
        codes = _engine_codes(layer, prev, R)
        cin, k = codes.shape[1], codes.shape[2]
        ct_in = _ceil(cin, R)                 # channel tiles (words) of an input pixel
        n_ot = _ceil(layer.fan_out, C)
        if layer.depthwise and C % R == 0 and layer.fan_out % C == 0:
            ct, ot_step = C // R, C // R      # each output tile reads only its own channels
        else:                                 # dense (a depthwise layer as a block-diagonal dense one)
            ct, ot_step = ct_in, 0
        n_it = k * k * ct
        kx_jump = ct_in - ct + 1
        _, in_h, in_w = layer.in_chw if layer.is_conv else (cin, 1, 1)
        n_out, conv_h, out_w = layer.conv_chw
        _, ph, pw = layer.out_chw
        oct_ = _ceil(n_out, R)
        if layer.final:
            out_base = 0
        else:
            out_base = region_bases[l]
        parts = _channel_parts(layer, l in saves, conv_h * out_w, n_it, p, where)
        c_base, a_base = c_next, a_next
        c_next += n_out
        if c_next > p.chan_words:
            raise EngineFitError(f"{where}: channel parameters need {c_next} entries in total, more than "
                             f"chan_words {p.chan_words}; regenerate with --chan-words {c_next}")
        adapter_words = layer.adapter.words() if layer.adapter is not None else []
        a_next += len(adapter_words)
        if a_next > p.adapter_words:
            raise EngineFitError(f"{where}: ASQ adapters need {a_next} words in total, more than adapter_words "
                             f"{p.adapter_words}; regenerate with --adapter-words {a_next}")
        stride, pad = (layer.stride, layer.pad) if layer.is_conv else (1, 0)
        pk, ps, pp = layer.pool_kspd
        flags = ((Flag.FINAL if layer.final else 0) | (Flag.INPUT_BETA if layer.input_beta else 0)
                 | (Flag.RELU if layer.relu else 0) | (Flag.ASQ if layer.adapter is not None else 0)
                 | (Flag.ADAPTER_RELU if layer.adapter is not None and layer.adapter.w2 is not None else 0)
                 | (Flag.SAVE_RES if l in saves else 0) | (Flag.ADD_RES if layer.residual is not None else 0)
                 | (Flag.POOL_SUM if layer.pool_mode == "sum" else 0)
                 | (Flag.PRESCALE if layer.prescaled else 0))
        lo, hi, vf = (0, 0, 0) if layer.final else layer.quant_params()
        # the quantizer: non-ASQ M = Q_MULT_LO, S = Q_SHIFT; ASQ M = the table's inv_mant, S = Q_SHIFT (value_frac)
        # + inv_shift, and Q_MULT_LO/HI carry the prescale (0, 0 without); a final layer has none (all 0)
        if layer.final:
            qs, q_lo_f, q_hi_f = 0, 0, 0
        elif layer.adapter is not None:
            qs = vf
            q_lo_f, q_hi_f = (int(layer.pre_mult), int(layer.pre_shift)) if layer.prescaled else (0, 0)
        else:
            (q_lo_f, qs), q_hi_f = layer.quant_mult_shift(), 0
        rm, rs = (int(layer.residual[1]), int(layer.residual[2])) if layer.residual is not None else (0, 1)
        first_slot.append(len(slots))
        for p0, p1 in parts:                  # output channels p0..p1-1 (p0 a multiple of lcm(R, C))
            pn = p1 - p0
            pn_ot = _ceil(pn, C)
            v = {DescField.N_IT: n_it, DescField.N_OT: pn_ot, DescField.N_OUT: pn, DescField.IN_BASE: in_base,
                 DescField.OUT_BASE: out_base + p0 // R, DescField.W_BASE: 0, DescField.C_BASE: c_base + p0,
                 DescField.N_SPAN: max(n_it, C), DescField.FLAGS: int(flags), DescField.HI: hi, DescField.LO: lo,
                 DescField.K: k, DescField.CT: ct, DescField.STRIDE: stride, DescField.PAD: pad,
                 DescField.IN_H: in_h, DescField.IN_W: in_w, DescField.OUT_W: out_w,
                 DescField.N_PIX: conv_h * out_w, DescField.OCT: oct_, DescField.COL_STEP: stride * ct_in,
                 DescField.ROW_STEP: stride * in_w * ct_in - (out_w - 1) * stride * ct_in,
                 DescField.KROW_JUMP: (in_w - k) * ct_in + kx_jump,
                 DescField.PIX0: in_base - pad * (in_w + 1) * ct_in,
                 DescField.KX_JUMP: kx_jump, DescField.OT_STEP: ot_step,
                 DescField.RELU_FLOOR: int(layer.relu_floor) if layer.relu else 0,
                 DescField.Q_SHIFT: qs, DescField.Q_MULT_LO: q_lo_f, DescField.Q_MULT_HI: q_hi_f,
                 DescField.RES_MULT: rm, DescField.RES_SHIFT: rs, DescField.PK: pk, DescField.PS: ps,
                 DescField.PP: pp, DescField.CONV_H: conv_h, DescField.P_W: pw, DescField.P_NPIX: ph * pw,
                 DescField.A_BASE: a_base, DescField.HID: layer.adapter.hidden if layer.adapter is not None else 0,
                 DescField.Z_SHIFT: (int(layer.adapter.z_frac) - arith.ASQ_Z_FRAC if layer.adapter is not None
                                     else 0),
                 DescField.SRC: (first_slot[src] + 1) if src >= 0 else 0,
                 DescField.ACC_SHIFT: int(layer.acc_shift), DescField.POOL_SHIFT: layer.pool_shift,
                 DescField.SUM_SHIFT: layer.sum_shift,
                 DescField.H_SHIFT: int(layer.adapter.h_shift) if layer.adapter is not None else 0,
                 DescField.V_LAST: pn - (pn_ot - 1) * C}
            slots.append(v)
            slot_layer.append(l)
            slot_tiles.append([_pack_tile(codes, p0 // C + ot, it, ct, p, ct_base=(p0 // C + ot) * ot_step)
                               for ot in range(pn_ot) for it in range(n_it)])
        mult, shift, bias = layer.chan_params()
        chan_writes += [(int(Sel.CHAN), c_base + o, chan_word(int(mult[o]), int(shift[o]), int(bias[o])))
                        for o in range(n_out)]
        adapt_writes += [(int(Sel.ADAPT), a_base + i, adapt_word(w)) for i, w in enumerate(adapter_words)]
        out_bases.append(out_base)
    if len(slots) > p.max_layers:
        raise EngineFitError(f"the layers need {len(slots)} descriptor slots ({len(layers)} layers, the larger ones "
                         f"split by output channels), more than max_layers {p.max_layers}; regenerate with "
                         f"--max-layers {len(slots)}")
    # passes: consecutive slots whose weight tiles fit the weight memory together (one pass: all)
    passes, w_next = [[0, 0]], 0
    for i, tiles in enumerate(slot_tiles):
        if w_next + len(tiles) > p.weight_words:
            passes.append([i, i])
            w_next = 0
        slots[i][DescField.W_BASE] = w_next
        w_next += len(tiles)
        passes[-1][1] = i + 1
    if passes[0][1] == 0:                  # the first slot alone did not fit (cannot happen: parts fit)
        passes.pop(0)
    layouts_all = []
    for i, v in enumerate(slots):
        lay = _Layout(tuple(int(v[f]) for f in DescField))
        for name, val in zip(DescField, lay.fields()):
            lo_, hi_ = (-(1 << (DESC_BITS - 1)), 1 << (DESC_BITS - 1)) if name in SIGNED_FIELDS else (0, 1 << DESC_BITS)
            if not lo_ <= val < hi_:
                raise EngineFitError(f"layer {layers[slot_layer[i]].name}: descriptor field {name.name.lower()} = {val} "
                                 f"does not fit {DESC_BITS} bits; split the layer")
        layouts_all.append(lay)

    def weight_writes(first, stop):
        return [(int(Sel.WEIGHT), slots[i][DescField.W_BASE] + j, word)
                for i in range(first, stop) for j, word in enumerate(slot_tiles[i])]

    writes = [] if len(passes) > 1 else weight_writes(0, len(slots))
    writes += chan_writes + adapt_writes
    if factor is not None:
        writes += [(int(Sel.TABLE), i, w) for i, w in enumerate(table_words(factor))]
    for i, lay in enumerate(layouts_all):
        for f, val in zip(DescField, lay.fields()):
            writes.append((int(Sel.DESC), i * DESC_STRIDE + int(f), int(val) & mask16))
    pass_list = []
    if len(passes) == 1:
        writes.append((int(Sel.CTRL), int(Ctrl.N_LAYERS), len(slots)))
        pass_list.append(Pass(0, len(slots), []))
    else:
        for first, stop in passes:
            pass_list.append(Pass(first, stop, weight_writes(first, stop)
                                  + [(int(Sel.CTRL), int(Ctrl.FIRST_LAYER), first),
                                     (int(Sel.CTRL), int(Ctrl.N_LAYERS), stop)]))
    return Program(params=p, layers=layers, layouts=[layouts_all[i] for i in first_slot], config_writes=writes,
                   input_base=0, input_size=input_size, slots=layouts_all,
                   slot_layer=slot_layer, passes=pass_list, kept=kept)


def _act_regions(layers: list, sources: list, p: EngineParams) -> tuple[list, list]:
    """Activation region base (word) of every non-final layer, and which layers' outputs are still in
    place after a run (``kept``). The input region is at word 0.

    If the input and every non-final layer's region fit ``act_words`` side by side, each gets its own
    region (all outputs can be read back). Otherwise regions are reused: a layer's region is freed
    once every layer reading it has run, and a new region goes to the lowest free gap (first fit);
    layers whose region a later layer overwrote are not ``kept``. A layer whose own region does not
    fit next to the regions still needed then raises, naming the words it needs.
    """
    R = p.rows
    c0, h0, w0 = layers[0].in_chw
    sizes = [None if layer.final else layer.out_chw[1] * layer.out_chw[2] * _ceil(layer.out_chw[0], R)
             for layer in layers]
    in_words = h0 * w0 * _ceil(c0, R)
    total = in_words + sum(n for n in sizes if n is not None)
    bases: list = [None] * len(layers)
    if total <= p.act_words:
        nxt = in_words
        for l, n in enumerate(sizes):
            if n is not None:
                bases[l], nxt = nxt, nxt + n
        return bases, [True] * len(layers)
    last_read = {j: max([l for l, src in enumerate(sources) if src == j], default=-1) for j in range(-1, len(layers))}
    live = {-1: (0, in_words)}                     # owner -> (base, end)
    kept = [True] * len(layers)
    spans: dict = {}                               # owner -> (base, end), all ever allocated
    for l, n in enumerate(sizes):
        if n is None:
            continue
        for j in [j for j in live if last_read[j] < l]:
            del live[j]
        base = 0
        for b, e in sorted(live.values()):
            if base + n <= b:
                break
            base = max(base, e)
        if base + n > p.act_words:
            held = ", ".join(f"{'input' if j < 0 else layers[j].name} {e - b}" for j, (b, e) in sorted(live.items()))
            raise EngineFitError(f"layer {layers[l].name}: its {n}-word activation region does not fit act_words "
                             f"{p.act_words} next to the regions still to be read ({held} words); regenerate "
                             f"with --act-words {base + n}")
        for j, (b, e) in spans.items():
            if j >= 0 and b < base + n and base < e:
                kept[j] = False                    # overwritten: its outputs cannot be read back
        live[l] = spans[l] = (base, base + n)
        bases[l] = base
    return bases, kept


def _channel_parts(layer: LayerSpec, saved: bool, pixels: int, n_it: int, p: EngineParams,
                   where: str) -> list[tuple[int, int]]:
    """Output-channel ranges the layer runs in: one, unless its values (``pixels`` x channels before
    pooling) exceed the value buffer or its weight tiles the weight memory; then parts of a multiple
    of ``lcm(R, C)`` channels (so a part starts on a tile column and an activation word), each its
    own descriptor slot writing its channels into the layer's output region."""
    R, C = p.rows, p.cols
    n_out = layer.fan_out
    values, tiles = pixels * n_out, _ceil(n_out, C) * n_it
    over_values = not layer.final and values > p.value_words
    over_weights = tiles > p.weight_words
    if not (over_values or over_weights):
        return [(0, n_out)]
    need = (f"its {values} values (pixels x channels before pooling) exceed value_words {p.value_words}"
            if over_values else f"its {tiles} weight tiles exceed weight_words {p.weight_words}")
    fix = f"--value-words {values}" if over_values else f"--weight-words {tiles}"
    why = ("it is the final layer (its values go to RESULT)" if layer.final else
           "its ASQ quantizer needs every channel's sum" if layer.adapter is not None else
           "it adds a residual" if layer.residual is not None else
           "a later layer adds its values" if saved else
           "it is depthwise" if layer.depthwise else None)
    if why is not None:
        raise EngineFitError(f"{where}: {need}, and it cannot run in output-channel parts because {why}; "
                         f"regenerate with {fix}")
    unit = R * C // math.gcd(R, C)
    by_values = (p.value_words // pixels) // unit * unit
    by_weights = (p.weight_words // n_it) * C // unit * unit
    step = min(by_values, by_weights)
    if step < unit:
        small = (f"{pixels * unit} values" if by_values < unit else f"{_ceil(unit, C) * n_it} weight tiles")
        fix = (f"--value-words {pixels * unit}" if by_values < unit else f"--weight-words {_ceil(unit, C) * n_it}")
        raise EngineFitError(f"{where}: {need}; even its smallest output-channel part ({unit} channels) needs {small}; "
                         f"regenerate with {fix}")
    return [(c, min(c + step, n_out)) for c in range(0, n_out, step)]


def chan_word(mult: int, shift: int, bias: int) -> int:
    """A CHAN entry: ``mult`` (signed, CHAN_MULT_BITS) | ``shift`` (CHAN_SHIFT_BITS) | ``bias`` (signed,
    BIAS_BITS), LSB first (:data:`CHAN_BITS` = 40)."""
    return ((mult & ((1 << CHAN_MULT_BITS) - 1)) | (shift << CHAN_MULT_BITS)
            | ((bias & ((1 << arith.BIAS_BITS) - 1)) << (CHAN_MULT_BITS + CHAN_SHIFT_BITS)))


def chan_fields(word: int) -> tuple[int, int, int]:
    """``(mult, shift, bias)`` of a CHAN entry (the inverse of :func:`chan_word`)."""
    return (_signed(word, CHAN_MULT_BITS), (word >> CHAN_MULT_BITS) & ((1 << CHAN_SHIFT_BITS) - 1),
            _signed(word >> (CHAN_MULT_BITS + CHAN_SHIFT_BITS), arith.BIAS_BITS))


def _signed(word: int, bits: int) -> int:
    word &= (1 << bits) - 1
    return word - (1 << bits) if word >> (bits - 1) else word


def factor_word(beta_fixed: int) -> int:
    """A factor ``beta_fixed / 2**ASQ_BETA_FRAC`` as the engine holds it (the per-layer factor memory,
    ``Ctrl.BETA``): ``{mant: FACTOR_MANT_BITS, shift: FACTOR_SHIFT_BITS}`` of
    ``golden.arith.normalize_fixed``, LSB first (``FACTOR_BITS`` = 21)."""
    mant, shift = arith.normalize_fixed(int(beta_fixed), arith.ASQ_BETA_FRAC)
    return int(mant) | int(shift) << arith.FACTOR_MANT_BITS


def factor_fields(word: int) -> tuple[int, int]:
    """``(mant, shift)`` of a factor word (the inverse of :func:`factor_word`)."""
    return word & ((1 << arith.FACTOR_MANT_BITS) - 1), (word >> arith.FACTOR_MANT_BITS) & ((1 << arith.FACTOR_SHIFT_BITS) - 1)


def table_word(beta_mant: int, beta_shift: int, inv_mant: int, inv_shift: int) -> int:
    """A TABLE entry: ``{beta_mant, beta_shift, inv_mant, inv_shift}`` (15, 6, 15, 6 bits), LSB first
    (``ASQ_TABLE_BITS`` = 42): the factor word of ``beta`` and, above it, that of ``1/beta``."""
    fb = arith.FACTOR_BITS
    return (int(beta_mant) | int(beta_shift) << arith.FACTOR_MANT_BITS
            | (int(inv_mant) | int(inv_shift) << arith.FACTOR_MANT_BITS) << fb)


def table_fields(word: int) -> tuple[int, int, int, int]:
    """``(beta_mant, beta_shift, inv_mant, inv_shift)`` of a TABLE entry (the inverse of :func:`table_word`)."""
    return (*factor_fields(word), *factor_fields(word >> arith.FACTOR_BITS))


def table_words(factor: str) -> list[int]:
    """The TABLE memory image of an ASQ factor: :func:`table_word` of ``golden.arith.factor_words``."""
    return [table_word(*e) for e in zip(*(a.tolist() for a in arith.factor_words(factor)))]


def adapt_word(value: int) -> int:
    """An ADAPT word: a signed ``ADAPTER_ACC_BITS`` value as two's complement (weights use its low
    ``ADAPTER_WEIGHT_BITS``, sign-extended)."""
    return int(value) & ((1 << arith.ADAPTER_ACC_BITS) - 1)


def layer_cycles(params: EngineParams, n_it: int, n_ot: int, n_out: int, n_pix: int = 1, *, final: bool = True,
                 pool_taps: int | None = None, hidden: int = 0) -> int:
    """Cycles one layer takes (see the "Schedule" of ``hw/engine.py`` and ``docs/engine.md``).

    ``pool_taps``: taps of the pooling/quantizing walk, ``n_out * pooled_pixels * PK**2`` (default:
    no pooling, ``n_out * n_pix``); ``hidden`` > 0: the layer's quantizer is ASQ with that many
    adapter hidden units (1 for a one-layer adapter). ``final`` layers have no walk.
    """
    C = params.cols
    last_valid = n_out - (n_ot - 1) * C
    span = max(n_it, C)
    cycles = LAYER_OVERHEAD + n_pix * n_ot * span - (span - n_it) + TAIL_CYCLES + last_valid
    if final:
        return cycles
    taps = n_out * n_pix if pool_taps is None else pool_taps
    cycles += taps + WALK_FLUSH
    if hidden:
        cycles += taps + WALK_FLUSH + hidden * (n_out + 2) + 1 + ADAPT_TAIL
    return cycles


def program_layer_cycles(params: EngineParams, lay: _Layout) -> int:
    """:func:`layer_cycles` of one laid-out layer."""
    final = bool(lay.flags & Flag.FINAL)
    return layer_cycles(params, lay.n_it, lay.n_ot, lay.n_out, lay.n_pix, final=final,
                        pool_taps=lay.n_out * lay.p_npix * lay.pk * lay.pk,
                        hidden=lay.hid if lay.flags & Flag.ASQ else 0)


def predicted_cycles(params: EngineParams, program: Program) -> int:
    """Exact engine cycles of one sample of ``program``: its ``cycles`` output summed over the passes."""
    slots = program.slots or program.layouts
    passes = program.passes or [Pass(0, len(slots), [])]
    return sum(RUN_OVERHEAD + sum(program_layer_cycles(params, slots[i]) for i in range(ps.first, ps.stop))
               for ps in passes)
