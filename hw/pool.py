"""The pooling walk: reads the value buffer channel by channel, max- or sum-pools, prescales (ASQ),
and either hands the pooled values to the ASQ channel sums or quantizes them into activation codes
(``docs/engine.md``, "Dataflow")."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden import arith
from hw.program import DESC_BITS, EngineParams, require_engine_params
from hw.rescale import ActQuantizer, clamp_shift, quant_layout, round_shift, saturate
from hw.sequencer import desc_layout

__all__ = ["PoolingWalk", "pooled_layout", "code_layout", "depth_bits", "POOL_LATENCY", "POOL_SUM_BITS"]

#: Cycles from a walk tap (``val_en``) to the pooled value on ``sums`` / the residual write (value
#: read 1, pooling and prescale stage 1).
POOL_LATENCY = 2
#: Signed width of the sum-pooling register: a window holds at most ``value_words <= 2**16`` distinct
#: values of 16 bits, so its sum never leaves 32 bits.
POOL_SUM_BITS = arith.VALUE_BITS + DESC_BITS


def pooled_layout() -> data.StructLayout:
    """One pooled (prescaled) value for the ASQ channel sums:
    ``{value: signed 16, ch: 16, first_pix: 1, end_ch: 1}``, LSB first (``golden.arith.VALUE_BITS``)."""
    return data.StructLayout({"value": signed(arith.VALUE_BITS), "ch": unsigned(DESC_BITS), "first_pix": unsigned(1),
                              "end_ch": unsigned(1)})


def depth_bits(depth: int) -> int:
    """Address bits of a memory of ``depth`` words (at least 1)."""
    return max(1, (int(depth) - 1).bit_length())


def code_layout(params: EngineParams) -> data.StructLayout:
    """One activation code and where it goes: ``{code: abits, addr: depth_bits(act_words), bank: bank_bits}``,
    LSB first."""
    return data.StructLayout({"code": unsigned(params.abits), "addr": unsigned(depth_bits(params.act_words)),
                              "bank": unsigned(params.bank_bits)})


class PoolingWalk(wiring.Component):
    """Pools the value buffer of a ``CONV_H x OUT_W x N_OUT`` layer into ``P_NPIX`` pixels per channel.

    The walk visits, channel-outer, every pooled pixel (row-major, ``P_W`` wide) and the ``PK x PK``
    taps of its window (stride ``PS``, padding ``PP``), one tap a cycle from the cycle after
    ``start`` until ``end``: ``N_OUT * P_NPIX * PK**2`` cycles. Value ``(y, x, c)`` is at word
    ``(y * OUT_W + x) * N_OUT + c``. Values are 16-bit signed (``golden.arith.VALUE_BITS``).

    * Max pooling is exact and ignores padded taps.
    * Sum pooling (``POOL_SUM``) adds the window's values (0 for padded taps) in a
      :data:`POOL_SUM_BITS` (32) bit register, then ``v = saturate(round_half_up(sum / 2**POOL_SHIFT))``
      (``POOL_SHIFT`` 0: just the saturation; amounts above 62 act as 62; ``golden.arith.sum_pool``).
    * With ``PRESCALE`` the pooled value is re-expressed for the sums and the quantizer (never for the
      residual) as ``saturate(round_half_up(v * Q_MULT_LO / 2**Q_MULT_HI))`` (16 x 15-bit product:
      the low 15 bits of ``Q_MULT_LO``; ``Q_MULT_HI`` 1..63, above 62 acting as 62;
      ``golden.arith.prescale``).

    Then:

    * ``sum_pass`` 1 (ASQ summing walk): every pooled value leaves on ``sums``;
    * ``sum_pass`` 0: the pooled value goes to the residual memory (``res_*``, element
      ``pooled_pixel * N_OUT + c``, with ``SAVE_RES``; the pooled, saturated value) and through
      :class:`hw.rescale.ActQuantizer` (``inv``, ``LO``, ``HI``) to ``codes``: word ``OUT_BASE + pooled_pixel * OCT + c // R``,
      bank ``c % R``.

    Latency: the pooled value of a window is on ``sums`` / ``res_*`` ``POOL_LATENCY`` cycles after
    the window's last tap; its code on ``codes`` ``QUANT_LATENCY`` cycles later. The walk never
    waits: ``sums`` and ``codes`` must be taken when valid (``sums.ready`` is ignored,
    ``codes.ready`` would stall only the quantizer).

    Parameters
    ----------
    params : EngineParams
        R (banks), ``abits``, ``bank_bits``.

    Attributes
    ----------
    desc : In(desc_layout())
        ``N_OUT``, ``OUT_W``, ``CONV_H``, ``PK``, ``PS``, ``PP``, ``P_W``, ``P_NPIX``, ``OUT_BASE``,
        ``OCT``, ``FLAGS`` (``SAVE_RES``, ``POOL_SUM``, ``PRESCALE``), ``POOL_SHIFT``,
        ``Q_MULT_LO``/``HI`` (the prescale), ``LO``, ``HI``; constant during a walk.
    start : In(1)
        Pulse: the walk begins with the next cycle.
    sum_pass : In(1)
        Constant during a walk: 1 summing walk, 0 quantizing walk.
    inv : In(hw.rescale.quant_layout())
        Quantizer scale ``{mant: 15, shift: 7}`` (the ASQ unit's ``inv``; constant during a
        quantizing walk).
    end : Out(1)
        The walk's last tap (combinational).
    val_addr : Out(depth_bits(value_words)), val_en : Out(1)
    val_data : In(signed(16))
        Synchronous read port of the value buffer.
    sums : Out(stream.Signature(pooled_layout()))
        Pooled values of a summing walk.
    res_addr : Out(depth_bits(res_words)), res_data : Out(signed(16)), res_en : Out(1)
        Write port of the residual memory.

    Addresses are computed modulo the memory's size (``val_addr``, ``res_addr``, ``codes.addr`` are
    as wide as the value buffer's, the residual memory's and an activation bank's address), so the
    address arithmetic keeps only the bits the memories use.
    codes : Out(stream.Signature(code_layout(params)))
        Activation codes of a quantizing walk.
    """

    def __init__(self, params: EngineParams):
        require_engine_params(self, params)
        self.params = p = params
        VB = arith.VALUE_BITS
        super().__init__({
            "desc": In(desc_layout()), "start": In(1), "sum_pass": In(1), "inv": In(quant_layout()),
            "end": Out(1),
            "val_addr": Out(depth_bits(p.value_words)), "val_en": Out(1), "val_data": In(signed(VB)),
            "sums": Out(stream.Signature(pooled_layout())),
            "res_addr": Out(depth_bits(p.res_words)), "res_data": Out(signed(VB)), "res_en": Out(1),
            "codes": Out(stream.Signature(code_layout(p))),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        R, VB = p.rows, arith.VALUE_BITS
        d = self.desc
        flags = d.flags
        save_res, pool_sum, prescale = flags[5], flags[7], flags[8]
        n_out, out_w = d.n_out, d.out_w
        pk, ps, pp = d.pk, d.ps, d.pp
        AW = depth_bits(p.act_words)
        m.submodules.quant = qz = ActQuantizer(AW + p.bank_bits)

        walking = Signal()
        wc, wc_word, wc_bank = Signal(DESC_BITS), Signal(DESC_BITS), Signal(range(R))
        wpix, wpx = Signal(DESC_BITS), Signal(DESC_BITS)
        RW = depth_bits(p.res_words)
        # the window's residual element pooled_pixel * N_OUT + c and its code's word
        # OUT_BASE + pooled_pixel * OCT + c // R, counted (no multiplies)
        w_res, w_out = Signal(RW), Signal(AW)
        wy0, wx0 = Signal(signed(DESC_BITS + 2)), Signal(signed(DESC_BITS + 2))
        wy, wx = Signal(signed(DESC_BITS + 2)), Signal(signed(DESC_BITS + 2))
        ky2, kx2 = Signal(DESC_BITS), Signal(DESC_BITS)
        w_valid = Signal()
        m.d.comb += w_valid.eq((wy >= 0) & (wy < d.conv_h) & (wx >= 0) & (wx < out_w))
        v_addr = Signal(depth_bits(p.value_words))
        m.d.comb += v_addr.eq((wy[:DESC_BITS] * out_w + wx[:DESC_BITS]) * n_out + wc)
        m.d.comb += [self.val_addr.eq(v_addr), self.val_en.eq(walking)]
        last_tap = (kx2 == pk - 1) & (ky2 == pk - 1)
        m.d.comb += self.end.eq(walking & last_tap & (wpix == d.p_npix - 1) & (wc == n_out - 1))

        # stage 1: the value read
        t1_v, t1_tap, t1_first, t1_last, t1_end_ch, t1_first_pix = (Signal(name=f"t1_{n}") for n in
                                                                     ("v", "tap", "first", "last", "end_ch", "first_pix"))
        t1_c, t1_cbank, t1_res, t1_out = Signal(DESC_BITS), Signal(range(R)), Signal(RW), Signal(AW)
        m.d.sync += [t1_v.eq(walking), t1_tap.eq(w_valid), t1_first.eq((ky2 == 0) & (kx2 == 0)),
                     t1_last.eq(last_tap), t1_end_ch.eq(last_tap & (wpix == d.p_npix - 1)),
                     t1_first_pix.eq(wpix == 0), t1_c.eq(wc), t1_cbank.eq(wc_bank), t1_res.eq(w_res),
                     t1_out.eq(w_out)]
        pool_acc = Signal(signed(POOL_SUM_BITS))     # the window's max, or its sum
        cand = Signal(signed(VB))
        cur = Signal(signed(POOL_SUM_BITS))
        # max pooling: padded taps never win; sum pooling: they add 0
        m.d.comb += cand.eq(Mux(t1_tap, self.val_data, Mux(pool_sum, 0, -(1 << (VB - 1)))))
        with m.If(t1_first):
            m.d.comb += cur.eq(cand)
        with m.Elif(pool_sum):
            m.d.comb += cur.eq(pool_acc + cand)
        with m.Else():
            m.d.comb += cur.eq(Mux(cand > pool_acc, cand, pool_acc))
        with m.If(t1_v):
            m.d.sync += pool_acc.eq(cur)
        # the pooled value: the max itself, or the sum scaled by 2**-POOL_SHIFT (rounded) and saturated
        pshift = d.pool_shift
        pooled = Signal(signed(VB))
        m.d.comb += pooled.eq(Mux(pool_sum, saturate(Mux(pshift == 0, cur, round_shift(cur, clamp_shift(pshift))), VB),
                                  cur[:VB].as_signed()))
        # ASQ prescale (15-bit multiplier in q_mult_lo, shift 1..63 in q_mult_hi), saturated;
        # registered in stage 2 next to the pooled value itself
        pre_p = Signal(signed(VB + arith.MULT_BITS))
        pre_v = Signal(signed(VB))
        m.d.comb += [pre_p.eq(pooled * d.q_mult_lo[:arith.MULT_BITS]),
                     pre_v.eq(saturate(round_shift(pre_p, clamp_shift(d.q_mult_hi)), VB))]
        # stage 2: one pooled value (t2_val: the residual save) and what the sums / the quantizer take (t2_q)
        t2_v, t2_end_ch, t2_first_pix = Signal(), Signal(), Signal()
        t2_val = Signal(signed(VB))
        t2_q = Signal(signed(VB))
        t2_c, t2_cbank, t2_res, t2_out = Signal(DESC_BITS), Signal(range(R)), Signal(RW), Signal(AW)
        m.d.sync += [t2_v.eq(t1_v & t1_last), t2_val.eq(pooled), t2_q.eq(Mux(prescale, pre_v, pooled)),
                     t2_end_ch.eq(t1_end_ch), t2_first_pix.eq(t1_first_pix),
                     t2_c.eq(t1_c), t2_cbank.eq(t1_cbank), t2_res.eq(t1_res), t2_out.eq(t1_out)]
        m.d.comb += [self.sums.valid.eq(t2_v & self.sum_pass), self.sums.payload.value.eq(t2_q),
                     self.sums.payload.ch.eq(t2_c), self.sums.payload.first_pix.eq(t2_first_pix),
                     self.sums.payload.end_ch.eq(t2_end_ch)]
        # the pooled values a later layer adds as its residual (element pooled_pixel * n_out + o), never prescaled
        m.d.comb += [self.res_addr.eq(t2_res), self.res_data.eq(t2_val),
                     self.res_en.eq(t2_v & ~self.sum_pass & save_res)]
        # quantizing walk: codes to the activation banks (HWC: word t2_out, bank t2_cbank)
        m.d.comb += [qz.i.valid.eq(t2_v & ~self.sum_pass), qz.i.payload.v.eq(t2_q),
                     qz.i.payload.tag.eq(Cat(t2_out, t2_cbank)), qz.o.ready.eq(self.codes.ready),
                     qz.inv.eq(self.inv), qz.lo.eq(d.lo), qz.hi.eq(d.hi)]
        m.d.comb += [self.codes.valid.eq(qz.o.valid), self.codes.payload.code.eq(qz.o.payload.code[:p.abits]),
                     self.codes.payload.addr.eq(qz.o.payload.tag[:AW]),
                     self.codes.payload.bank.eq(qz.o.payload.tag[AW:])]

        # the walk: window columns, window rows, pooled pixels (row-major), channels
        with m.If(self.start):
            m.d.sync += [walking.eq(1), wc.eq(0), wc_word.eq(0), wc_bank.eq(0), wpix.eq(0), wpx.eq(0),
                         wy0.eq(-pp), wx0.eq(-pp), wy.eq(-pp), wx.eq(-pp), ky2.eq(0), kx2.eq(0),
                         w_res.eq(0), w_out.eq(d.out_base)]
        with m.Elif(walking):
            with m.If(kx2 == pk - 1):
                m.d.sync += [kx2.eq(0), wx.eq(wx0)]
                with m.If(ky2 == pk - 1):
                    m.d.sync += ky2.eq(0)
                    with m.If(wpix == d.p_npix - 1):
                        m.d.sync += [wpix.eq(0), wpx.eq(0), wy0.eq(-pp), wx0.eq(-pp), wy.eq(-pp), wx.eq(-pp),
                                     wc.eq(wc + 1), w_res.eq(wc + 1)]
                        with m.If(wc_bank == R - 1):
                            m.d.sync += [wc_bank.eq(0), wc_word.eq(wc_word + 1), w_out.eq(d.out_base + wc_word + 1)]
                        with m.Else():
                            m.d.sync += [wc_bank.eq(wc_bank + 1), w_out.eq(d.out_base + wc_word)]
                        with m.If(wc == n_out - 1):
                            m.d.sync += walking.eq(0)
                    with m.Elif(wpx == d.p_w - 1):
                        m.d.sync += [wpix.eq(wpix + 1), wpx.eq(0), wx0.eq(-pp), wx.eq(-pp), wy0.eq(wy0 + ps),
                                     wy.eq(wy0 + ps), w_res.eq(w_res + n_out), w_out.eq(w_out + d.oct)]
                    with m.Else():
                        m.d.sync += [wpix.eq(wpix + 1), wpx.eq(wpx + 1), wx0.eq(wx0 + ps), wx.eq(wx0 + ps),
                                     wy.eq(wy0), w_res.eq(w_res + n_out), w_out.eq(w_out + d.oct)]
                with m.Else():
                    m.d.sync += [ky2.eq(ky2 + 1), wy.eq(wy + 1)]
            with m.Else():
                m.d.sync += [kx2.eq(kx2 + 1), wx.eq(wx + 1)]
        return m
