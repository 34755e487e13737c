"""Engine parameters and programs: what the host writes into :class:`hw.engine.PostEngine`.

Pure Python + NumPy + :mod:`golden.arith` (no Amaranth), so the compiler, the cocotb runner and
the tests can build and check programs without the HDL toolchain.

* :class:`EngineParams` -- the generator parameters of ``docs/engine.md`` and their derived widths.
* :class:`LayerSpec` -- one fully-connected layer, codes already at the engine's weight width.
* :func:`build_program` -- lays the layers out in the engine's memories (activation regions,
  weight tiles, biases, descriptors) and checks that everything fits before any simulation;
  every error names the layer and what to change.
* :class:`Program` -- the host writes (configuration and per-sample input), the reads that fetch
  every layer's outputs, their decoding, and a direct :mod:`golden.arith` reference.
* :func:`predicted_cycles` -- the engine's exact cycle count (the schedule of ``hw/engine.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from golden import arith

__all__ = ["EngineParams", "Sel", "DescField", "DESC_FIELDS", "DESC_STRIDE", "DESC_BITS", "SIGNED_FIELDS", "LayerSpec",
           "Program", "build_program", "predicted_cycles", "LAYER_OVERHEAD", "TAIL_CYCLES", "RUN_OVERHEAD"]

#: Descriptor slots per layer in the ``DESC`` address space (``layer * 32 + field``).
DESC_STRIDE = 32
#: Width of one descriptor field in the engine (every field is stored as a 16-bit word).
DESC_BITS = 16


class Sel(IntEnum):
    """``sel`` values of the host ports (the memory map of ``docs/engine.md``)."""

    ACT = 0
    WEIGHT = 1
    BIAS = 2
    DESC = 3
    CTRL = 4
    RESULT = 5


class DescField(IntEnum):
    """Fields of a layer descriptor (``DESC`` address ``layer * 32 + field``).

    Fields 11.. describe the convolution geometry (a fully-connected layer is a 1x1 convolution
    on a 1x1 input: ``K = 1``, ``CT = n_it``, one pixel). Fields marked signed are 16-bit two's
    complement.
    """

    N_IT = 0       #: input tiles, ceil(fan_in / R)
    N_OT = 1       #: output tiles, ceil(fan_out / C)
    N_OUT = 2      #: fan_out
    IN_BASE = 3    #: activation word of the input region
    OUT_BASE = 4   #: activation word of the output region (unused when final)
    W_BASE = 5     #: weight word of tile (ot=0, it=0); tile (ot, it) at w_base + ot*n_it + it
    B_BASE = 6     #: bias index of output 0
    MULT = 7       #: requantisation multiplier
    SHIFT = 8      #: requantisation shift
    QMAX = 9       #: 2**out_bits - 1
    FINAL = 10     #: 1: write acc to RESULT[o] instead of requantising
    K = 11         #: kernel size (square)
    CT = 12        #: input channel tiles, ceil(C_in / R); n_it = K*K*CT
    STRIDE = 13    #: convolution stride
    PAD = 14       #: zero padding on every side
    IN_H = 15      #: input height
    IN_W = 16      #: input width
    OUT_W = 17     #: output width
    N_PIX = 18     #: output pixels, out_h * out_w
    OCT = 19       #: activation words per output pixel, ceil(n_out / R)
    COL_STEP = 20  #: input word step between horizontally adjacent output pixels, stride * CT
    ROW_STEP = 21  #: (signed) step from the last pixel of an output row to the first of the next
    KROW_JUMP = 22 #: word step from the end of one kernel row to the start of the next, (IN_W-K)*CT + 1
    PIX0 = 23      #: (signed) input word of tap (0, 0) of output pixel (0, 0), in_base - PAD*(IN_W+1)*CT
    V_LAST = 24    #: valid outputs of the last output tile of a pixel, n_out - (n_ot-1)*C (read last:
                   #: the only field not used in the cycle that latches it)


#: Number of descriptor fields the engine stores per layer.
DESC_FIELDS = len(DescField)

# --- the schedule constants (see hw/engine.py "Schedule") -------------------
#: Cycles per layer outside the tile loop and the tail: 1 (LAYER) + DESC_FIELDS + 1 (DESC: one
#: field read per cycle, plus the cycle that latches the last one).
LAYER_OVERHEAD = 1 + DESC_FIELDS + 1
#: Cycles of the layer tail beyond the last tile's valid outputs: the last step's memory data 1,
#: product register 1, accumulators 1 (taken by the drain), requantiser 3 (the last writes).
TAIL_CYCLES = 6
#: Cycles per run outside the layers: the final LAYER cycle that raises ``done``.
RUN_OVERHEAD = 1


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
    act_words, weight_words, bias_words, result_words, max_layers : int
        Memory depths (words) and descriptor slots.
    """

    rows: int = 4
    cols: int = 4
    wbits: int = 4
    abits: int = 4
    frac_bits: int = arith.DEFAULT_FRAC_BITS
    max_fan_in: int = 256
    act_words: int = 64
    weight_words: int = 1024
    bias_words: int = 256
    result_words: int = 64
    max_layers: int = 8

    def __post_init__(self):
        for name in ("rows", "cols"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        arith.check_wbits(self.wbits)
        arith.check_abits(self.abits)
        arith.check_frac_bits(self.frac_bits)
        for name in ("max_fan_in", "act_words", "weight_words", "bias_words", "result_words", "max_layers"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        space = 1 << self.addr_bits
        if self.act_words << self.bank_bits > space:
            raise ValueError(f"act_words {self.act_words} with {self.rows} banks needs more than "
                             f"{self.addr_bits} address bits; use at most {space >> self.bank_bits}")
        for name in ("weight_words", "bias_words", "result_words"):
            if getattr(self, name) > space:
                raise ValueError(f"{name} {getattr(self, name)} exceeds the {self.addr_bits}-bit host "
                                 f"address space; use at most {space}")
        if self.max_layers * DESC_STRIDE > space:
            raise ValueError(f"max_layers {self.max_layers} exceeds the descriptor address space; "
                             f"use at most {space // DESC_STRIDE}")
        if self.max_fan_in > (1 << DESC_BITS) * self.rows:
            raise ValueError(f"max_fan_in {self.max_fan_in} needs more than {1 << DESC_BITS} input tiles; "
                             f"use at most {(1 << DESC_BITS) * self.rows}")

    # --- derived ---------------------------------------------------------------
    @property
    def acc_bits(self) -> int:
        """Signed accumulator width: ``arith.accumulator_bits(max_fan_in, abits, frac_bits)``."""
        return arith.accumulator_bits(self.max_fan_in, self.abits, self.frac_bits)

    @property
    def bank_bits(self) -> int:
        """Bank-select bits of an ``ACT`` address: ``max(1, ceil(log2 R))``."""
        return max(1, math.ceil(math.log2(self.rows)))

    @property
    def data_bits(self) -> int:
        """Host data width: ``max(R*C*W, acc_bits, 32)``."""
        return max(self.rows * self.cols * self.wbits, self.acc_bits, 32)

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


@dataclass(eq=False)
class LayerSpec:
    """One fully-connected layer as the engine runs it.

    ``codes``: int array ``[fan_out, fan_in]`` of POST codes already at the engine's ``wbits``;
    ``bias``: int array ``[fan_out]`` in accumulator units; ``mult``/``shift``: requantisation
    (``None`` for the final layer); ``out_bits``: output activation bits (``None`` for final).
    """

    codes: np.ndarray
    bias: np.ndarray
    mult: int | None
    shift: int | None
    out_bits: int | None
    final: bool
    name: str
    in_shape: tuple | None = None     #: (C, H, W) of a convolution's input; None: fully connected
    stride: int = 1
    pad: int = 0

    @property
    def is_conv(self) -> bool:
        return self.in_shape is not None

    @property
    def k(self) -> int:
        return int(np.shape(self.codes)[2]) if self.is_conv else 1

    @property
    def fan_in(self) -> int:
        """Products per output: ``C_in * K * K`` (fully connected: the input size)."""
        return int(np.prod(np.shape(self.codes)[1:]))

    @property
    def fan_out(self) -> int:
        """Output channels (fully connected: outputs)."""
        return int(np.shape(self.codes)[0])

    @property
    def in_chw(self) -> tuple:
        return tuple(self.in_shape) if self.is_conv else (self.fan_in, 1, 1)

    @property
    def out_chw(self) -> tuple:
        c, h, w = self.in_chw
        k = self.k
        return (self.fan_out, (h + 2 * self.pad - k) // self.stride + 1, (w + 2 * self.pad - k) // self.stride + 1)

    @property
    def in_size(self) -> int:
        return int(np.prod(self.in_chw))

    @property
    def out_size(self) -> int:
        return int(np.prod(self.out_chw))


@dataclass(frozen=True)
class _Layout:
    """Where one layer lives in the engine (the descriptor's values, :class:`DescField` order)."""

    n_it: int
    n_ot: int
    n_out: int
    in_base: int
    out_base: int
    w_base: int
    b_base: int
    mult: int
    shift: int
    qmax: int
    final: int
    k: int = 1
    ct: int = 1
    stride: int = 1
    pad: int = 0
    in_h: int = 1
    in_w: int = 1
    out_w: int = 1
    n_pix: int = 1
    oct: int = 1
    col_step: int = 0
    row_step: int = 0
    krow_jump: int = 1
    pix0: int = 0
    v_last: int = 1

    def fields(self) -> list[int]:
        return [self.n_it, self.n_ot, self.n_out, self.in_base, self.out_base, self.w_base, self.b_base,
                self.mult, self.shift, self.qmax, self.final, self.k, self.ct, self.stride, self.pad,
                self.in_h, self.in_w, self.out_w, self.n_pix, self.oct, self.col_step, self.row_step,
                self.krow_jump, self.pix0, self.v_last]


#: Descriptor fields holding signed values (written as 16-bit two's complement).
SIGNED_FIELDS = (DescField.ROW_STEP, DescField.PIX0)


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
        Weights, biases, descriptors and ``n_layers``: written once before any sample.
    input_base : int
        Activation word of the input region; ``input_size`` its element count.
    """

    params: EngineParams
    layers: list
    layouts: list
    config_writes: list = field(default_factory=list)
    input_base: int = 0
    input_size: int = 0

    # --- per-sample host traffic --------------------------------------------------
    def _check_input(self, x) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 1 or x.shape[0] != self.input_size:
            raise ValueError(f"input must be a 1-D array of {self.input_size} activation codes "
                             f"(C*H*W in CHW order for a convolution), got shape {x.shape}")
        if not np.issubdtype(x.dtype, np.integer):
            raise ValueError(f"input codes must be integers, got dtype {x.dtype}")
        x = x.astype(np.int64)
        top = 2 ** self.params.abits - 1
        if np.any((x < 0) | (x > top)):
            raise ValueError(f"input codes must lie in 0..{top} ({self.params.abits}-bit activations)")
        return x

    def _addresses(self, base: int, chw: tuple) -> list[int]:
        """``ACT`` addresses of a CHW tensor stored HWC with ``ceil(C/R)`` words per pixel, CHW order."""
        c, h, w = chw
        R, bb = self.params.rows, self.params.bank_bits
        ct = _ceil(c, R)
        return [((base + (y * w + x) * ct + ch // R) << bb) | (ch % R)
                for ch in range(c) for y in range(h) for x in range(w)]

    def input_writes(self, x_codes) -> list[tuple[int, int, int]]:
        """Host writes that place one sample's input codes (CHW order) in the input region."""
        x = self._check_input(x_codes)
        addrs = self._addresses(self.input_base, self.layers[0].in_chw)
        return [(int(Sel.ACT), a, int(v)) for a, v in zip(addrs, x)]

    def output_reads(self) -> list[tuple[int, int]]:
        """Reads of every layer's outputs in layer order, each in CHW order (RESULT for the final layer)."""
        reads = []
        for layer, lay in zip(self.layers, self.layouts):
            c, h, w = layer.out_chw
            if lay.final:       # RESULT index pixel * n_out + o
                reads += [(int(Sel.RESULT), (y * w + x) * c + o) for o in range(c) for y in range(h)
                          for x in range(w)]
            else:
                reads += [(int(Sel.ACT), a) for a in self._addresses(lay.out_base, layer.out_chw)]
        return reads

    def decode_outputs(self, values) -> list[np.ndarray]:
        """Split raw read data (in :meth:`output_reads` order) into one int64 array per layer (CHW, flat)."""
        values = [int(v) for v in values]
        sizes = [layer.out_size for layer in self.layers]
        if len(values) != sum(sizes):
            raise ValueError(f"expected {sum(sizes)} read values, got {len(values)}")
        db = self.params.data_bits
        out, pos = [], 0
        for lay, n in zip(self.layouts, sizes):
            chunk = values[pos:pos + n]
            pos += n
            if lay.final:
                chunk = [v - (1 << db) if v >> (db - 1) & 1 else v for v in chunk]
            out.append(np.array(chunk, dtype=np.int64))
        return out

    def reference(self, x_codes) -> list[np.ndarray]:
        """Per-layer outputs (CHW, flat) computed directly with :mod:`golden.arith`."""
        p = self.params
        x = self._check_input(x_codes)
        outs = []
        for layer in self.layers:
            cols = _patches(x.reshape(layer.in_chw), layer.k, layer.stride, layer.pad)   # [pixels, fan_in]
            codes = np.asarray(layer.codes, dtype=np.int64).reshape(layer.fan_out, -1)
            prod = arith.post_product(cols[:, None, :], codes[None, :, :], p.wbits, p.abits, p.frac_bits)
            acc = prod.sum(axis=2) + np.asarray(layer.bias, dtype=np.int64)[None, :]     # [pixels, out]
            if layer.final:
                y = acc.astype(np.int64)
            else:
                y = arith.requantize(acc, layer.mult, layer.shift, layer.out_bits).astype(np.int64)
            y = y.T.reshape(-1)                                                        # CHW order
            outs.append(y)
            x = y
        return outs


def _patches(x: np.ndarray, k: int, stride: int, pad: int) -> np.ndarray:
    """``[C, H, W]`` codes -> ``[out_h*out_w, C*k*k]`` receptive fields (zero padding), row-major pixels."""
    c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    rows = [xp[:, y * stride:y * stride + k, xx * stride:xx * stride + k].reshape(-1)
            for y in range(oh) for xx in range(ow)]
    return np.stack(rows)


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _pack_tile(codes: np.ndarray, ot: int, it: int, ct_count: int, p: EngineParams) -> int:
    """Weight word of tile ``(ot, it)``; ``codes`` is ``[out, C_in, K, K]`` and input tile ``it`` is
    ``(ky*K + kx)*CT + ct``: row ``r`` holds input channel ``ct*R + r`` at tap ``(ky, kx)``."""
    word = 0
    fan_out, cin, k, _ = codes.shape
    tap, ct = divmod(it, ct_count)
    ky, kx = divmod(tap, k)
    for r in range(p.rows):
        ci = ct * p.rows + r
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
        return codes
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


def _check_layer(l: int, layer: LayerSpec, p: EngineParams, prev_fan_out: int | None, last: bool) -> None:
    name = layer.name
    where = f"layer {name}"
    if not isinstance(layer, LayerSpec):
        raise ValueError(f"layer {l} is not a LayerSpec")
    codes = np.asarray(layer.codes)
    if layer.is_conv:
        if codes.ndim != 4 or codes.shape[2] != codes.shape[3] or min(codes.shape) < 1:
            raise ValueError(f"{where}: convolution codes must be a non-empty [out, C_in, K, K] array, "
                             f"got shape {codes.shape}")
        if len(layer.in_shape) != 3 or layer.in_shape[0] != codes.shape[1] or min(layer.in_shape) < 1:
            raise ValueError(f"{where}: in_shape {layer.in_shape} must be (C_in={codes.shape[1]}, H, W)")
        if not (isinstance(layer.stride, int) and layer.stride >= 1 and isinstance(layer.pad, int)
                and 0 <= layer.pad < codes.shape[2]):
            raise ValueError(f"{where}: stride must be >= 1 and padding in 0..K-1, got {layer.stride}, {layer.pad}")
        if min(layer.out_chw[1:]) < 1:
            raise ValueError(f"{where}: a {codes.shape[2]}x{codes.shape[2]} kernel does not fit the "
                             f"{layer.in_shape[1]}x{layer.in_shape[2]} input")
    elif codes.ndim != 2 or codes.shape[0] < 1 or codes.shape[1] < 1:
        raise ValueError(f"{where}: codes must be a non-empty [fan_out, fan_in] array, got shape {codes.shape}")
    if not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"{where}: codes must be integers, got dtype {codes.dtype}")
    fan_out, fan_in = layer.fan_out, layer.fan_in
    if prev_fan_out is not None:
        prev_chw = prev_fan_out
        if layer.is_conv and tuple(layer.in_shape) != tuple(prev_chw):
            raise ValueError(f"{where}: input shape {tuple(layer.in_shape)} does not match the previous "
                             f"layer's output {tuple(prev_chw)}")
        if not layer.is_conv and fan_in != int(np.prod(prev_chw)):
            raise ValueError(f"{where}: fan_in {fan_in} does not match the previous layer's "
                             f"{int(np.prod(prev_chw))} outputs")
    if np.any((codes < 0) | (codes >= 2 ** p.wbits)):
        bad = int(codes.max()) if codes.max() >= 2 ** p.wbits else int(codes.min())
        raise ValueError(f"{where}: POST code {bad} does not fit the engine's {p.wbits}-bit PEs "
                         f"(codes must lie in 0..{2 ** p.wbits - 1}); widen the codes with "
                         f"golden.arith.widen_post_code or regenerate with a larger --wbits")
    if fan_in > p.max_fan_in:
        raise ValueError(f"{where}: fan_in {fan_in} exceeds max_fan_in {p.max_fan_in} of the engine; "
                         f"regenerate with --max-fan-in {fan_in}")
    bias = np.asarray(layer.bias)
    if bias.shape != (fan_out,) or not np.issubdtype(bias.dtype, np.integer):
        raise ValueError(f"{where}: bias must be an integer array of shape ({fan_out},), got "
                         f"{bias.dtype} {bias.shape}")
    if layer.final:
        if not last:
            raise ValueError(f"{where}: only the last layer may be final (its outputs go to RESULT, "
                             f"which no layer can read)")
        if layer.out_size > p.result_words:
            raise ValueError(f"{where}: {layer.out_size} outputs exceed result_words {p.result_words}; "
                             f"regenerate with --result-words {layer.out_size}")
    else:
        ob = layer.out_bits
        if not isinstance(ob, (int, np.integer)) or not (arith.ABITS_RANGE.start <= ob <= p.abits):
            fix = f"; regenerate with --abits {ob}" if isinstance(ob, (int, np.integer)) and ob > p.abits else ""
            raise ValueError(f"{where}: out_bits {ob!r} must be an integer in {arith.ABITS_RANGE.start}.."
                             f"{p.abits} (the engine's activation width){fix}")
        if not isinstance(layer.mult, (int, np.integer)) or not 0 < int(layer.mult) < 2 ** arith.MULT_BITS:
            raise ValueError(f"{where}: mult {layer.mult!r} outside 1..{2 ** arith.MULT_BITS - 1} "
                             f"(the {arith.MULT_BITS}-bit requantisation multiplier)")
        if not isinstance(layer.shift, (int, np.integer)) or int(layer.shift) not in arith.SHIFT_RANGE:
            raise ValueError(f"{where}: shift {layer.shift!r} outside {arith.SHIFT_RANGE.start}.."
                             f"{arith.SHIFT_RANGE.stop - 1} (the requantisation shifter)")
    # the accumulator never leaves acc_bits: bound it with the largest activation code
    prod = arith.post_product(2 ** p.abits - 1, codes.astype(np.int64).reshape(fan_out, -1), p.wbits, p.abits,
                              p.frac_bits)
    hi = bias.astype(np.int64) + np.where(prod > 0, prod, 0).sum(axis=1)
    lo = bias.astype(np.int64) + np.where(prod < 0, prod, 0).sum(axis=1)
    amax, amin = 2 ** (p.acc_bits - 1) - 1, -2 ** (p.acc_bits - 1)
    if hi.max() > amax or lo.min() < amin:
        o = int(np.argmax(hi > amax)) if hi.max() > amax else int(np.argmax(lo < amin))
        raise ValueError(f"{where}: output {o} (bias {int(bias[o])}) can reach an accumulator value outside "
                         f"the engine's {p.acc_bits}-bit range [{amin}, {amax}]; limit the bias to "
                         f"+-fan_in * {arith.max_product_magnitude(p.abits, p.frac_bits)} or regenerate "
                         f"with a larger --max-fan-in")


def build_program(params: EngineParams, layers: list[LayerSpec]) -> Program:
    """Lay ``layers`` out in an engine with ``params``; check that everything fits.

    Allocation: activation region 0 (word 0) holds the input, then one region per non-final layer
    (``ceil(n / R)`` words each) so that every layer's outputs can be read back after a run.
    Weight tiles are packed layer after layer (tile ``(ot, it)`` at ``w_base + ot*n_it + it``,
    padded with code 0); biases layer after layer, each layer padded with zeros to ``n_ot * C``
    entries (the engine reads C biases per output tile).

    Raises
    ------
    ValueError
        Naming the layer and what to change, if anything does not fit.
    """
    if not isinstance(params, EngineParams):
        raise ValueError(f"params must be an EngineParams, got {type(params).__name__}")
    layers = list(layers)
    p = params
    if not layers:
        raise ValueError("a program needs at least one layer")
    if len(layers) > p.max_layers:
        raise ValueError(f"{len(layers)} layers exceed max_layers {p.max_layers} of the engine; "
                         f"regenerate with --max-layers {len(layers)}")
    names = [l.name for l in layers]
    if len(set(names)) != len(names):
        raise ValueError(f"layer names must be unique, got {names}")
    prev = None
    for l, layer in enumerate(layers):
        _check_layer(l, layer, p, prev, l == len(layers) - 1)
        prev = layer.out_chw

    R, C = p.rows, p.cols
    input_size = layers[0].in_size
    c0, h0, w0 = layers[0].in_chw
    act_next = h0 * w0 * _ceil(c0, R)
    if act_next > p.act_words:
        raise ValueError(f"the input needs {act_next} words per activation bank, more than act_words "
                         f"{p.act_words}; regenerate with --act-words {act_next}")
    in_base, w_next, b_next = 0, 0, 0
    layouts, writes = [], []
    prev = None
    for layer in layers:
        where = f"layer {layer.name}"
        codes = _engine_codes(layer, prev, R)
        cin, k = codes.shape[1], codes.shape[2]
        ct = _ceil(cin, R)
        n_it, n_ot = k * k * ct, _ceil(layer.fan_out, C)
        _, in_h, in_w = layer.in_chw if layer.is_conv else (cin, 1, 1)
        out_c, out_h, out_w = layer.out_chw
        oct_ = _ceil(out_c, R)
        if layer.final:
            out_base = 0
        else:
            out_base = act_next
            act_next += out_h * out_w * oct_
            if act_next > p.act_words:
                raise ValueError(f"{where}: activation regions need {act_next} words per bank (input and "
                                 f"every non-final layer's output), more than act_words {p.act_words}; "
                                 f"regenerate with --act-words {act_next}")
        w_base, b_base = w_next, b_next
        w_next += n_ot * n_it
        b_next += n_ot * C
        if w_next > p.weight_words:
            raise ValueError(f"{where}: weight tiles need {w_next} words in total, more than weight_words "
                             f"{p.weight_words}; regenerate with --weight-words {w_next}")
        if b_next > p.bias_words:
            raise ValueError(f"{where}: biases need {b_next} words in total (padded to {C} per output tile), "
                             f"more than bias_words {p.bias_words}; regenerate with --bias-words {b_next}")
        stride, pad = (layer.stride, layer.pad) if layer.is_conv else (1, 0)
        lay = _Layout(n_it=n_it, n_ot=n_ot, n_out=layer.fan_out, in_base=in_base, out_base=out_base,
                      w_base=w_base, b_base=b_base,
                      mult=0 if layer.final else int(layer.mult), shift=0 if layer.final else int(layer.shift),
                      qmax=0 if layer.final else 2 ** int(layer.out_bits) - 1, final=int(bool(layer.final)),
                      k=k, ct=ct, stride=stride, pad=pad, in_h=in_h, in_w=in_w, out_w=out_w,
                      n_pix=out_h * out_w, oct=oct_, col_step=stride * ct,
                      row_step=stride * in_w * ct - (out_w - 1) * stride * ct,
                      krow_jump=(in_w - k) * ct + 1, v_last=layer.fan_out - (n_ot - 1) * C,
                      pix0=in_base - pad * (in_w + 1) * ct)
        for name, v in zip(DescField, lay.fields()):
            lo, hi = (-(1 << (DESC_BITS - 1)), 1 << (DESC_BITS - 1)) if name in SIGNED_FIELDS else (0, 1 << DESC_BITS)
            if not lo <= v < hi:
                raise ValueError(f"{where}: descriptor field {name.name.lower()} = {v} does not fit "
                                 f"{DESC_BITS} bits; split the layer")
        layouts.append(lay)
        for ot in range(n_ot):
            for it in range(n_it):
                writes.append((int(Sel.WEIGHT), w_base + ot * n_it + it, _pack_tile(codes, ot, it, ct, p)))
        mask = (1 << p.acc_bits) - 1
        bias = np.asarray(layer.bias, dtype=np.int64)
        for o in range(n_ot * C):
            v = int(bias[o]) if o < layer.fan_out else 0
            writes.append((int(Sel.BIAS), b_base + o, v & mask))
        in_base = out_base
        prev = layer
    for l, lay in enumerate(layouts):
        for f, v in zip(DescField, lay.fields()):
            writes.append((int(Sel.DESC), l * DESC_STRIDE + int(f), int(v) & ((1 << DESC_BITS) - 1)))
    writes.append((int(Sel.CTRL), 0, len(layers)))
    return Program(params=p, layers=layers, layouts=layouts, config_writes=writes,
                   input_base=0, input_size=input_size)


def layer_cycles(params: EngineParams, n_it: int, n_ot: int, n_out: int, n_pix: int = 1) -> int:
    """Cycles one layer takes (see the "Schedule" of ``hw/engine.py`` and ``docs/engine.md``)."""
    C = params.cols
    last_valid = n_out - (n_ot - 1) * C
    return LAYER_OVERHEAD + n_pix * n_ot * (C + n_it) + TAIL_CYCLES + last_valid


def predicted_cycles(params: EngineParams, program: Program) -> int:
    """Exact value of the engine's ``cycles`` output for one run of ``program``."""
    return RUN_OVERHEAD + sum(layer_cycles(params, lay.n_it, lay.n_ot, lay.n_out, lay.n_pix)
                              for lay in program.layouts)
