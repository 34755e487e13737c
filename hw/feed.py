"""The feed/address generator: activation and weight addresses of a layer's convolution walk, and
the array steps built from what the memories return (``docs/engine.md``, "Dataflow")."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.array import array_step_layout
from hw.program import DESC_BITS, EngineParams, require_engine_params
from hw.sequencer import desc_layout

__all__ = ["FeedGenerator"]


class FeedGenerator(wiring.Component):
    """Walks a layer's output pixels, output tiles and receptive-field taps; one array step a cycle.

    For every output pixel (row-major, ``N_PIX`` of them) and output tile (``N_OT``), the generator
    spends ``N_SPAN = max(N_IT, C)`` cycles: in each of the first ``N_IT`` it reads one weight word
    (``weight_addr``, consecutive from ``W_BASE``, again for every pixel) and the R activation
    banks at ``act_addr`` (the tap's word: channel tiles fastest, then kernel columns, then kernel
    rows; ``PIX0``/``COL_STEP``/``ROW_STEP``/``KX_JUMP``/``KROW_JUMP``/``OT_STEP`` from the
    descriptor), then idles so that the drain keeps up. The run's last tile ends with its last
    step (no idle cycles). Taps outside the ``IN_H x IN_W`` input feed zero codes.

    Latency: the memories answer one cycle after ``act_en``; the step is offered on ``o`` that
    cycle (``o.valid`` is a register). The generator never waits: ``o.ready`` must be high whenever
    ``o.valid`` is (the engine's schedule guarantees it: the array is always ready, see
    :class:`hw.rescale.RescaleUnit`).

    Parameters
    ----------
    params : EngineParams
        Array shape (R, C) and code widths.

    Attributes
    ----------
    desc : In(desc_layout())
        The layer's descriptor, constant while running.
    start : In(1)
        Pulse (the descriptor's last cycle): reset the walk to tile 0 of pixel 0.
    active : In(1)
        Level: walk (one cycle of the schedule per cycle).
    end : Out(1)
        The layer's last feed cycle (combinational, while ``active``).
    act_addr : Out(16)
        Activation word of every bank (the low bits address the memories).
    act_en : Out(1)
        Read enable of the activation banks (a step is issued).
    act_data : In(data.ArrayLayout(unsigned(abits), R))
        The banks' read data (one cycle after ``act_en``).
    weight_addr : Out(16)
        Weight word (read every cycle).
    weight_data : In(unsigned(R * C * wbits))
        The weight memory's read data.
    o : Out(stream.Signature(array_step_layout(R, C, wbits, abits, acc_bits)))
        Array steps; ``x[r]`` is ``act_data[r]``, or 0 for a padding tap; ``init`` is 0.
    last_out : Out(1)
        A step with ``last`` set is transferred this cycle (a tile enters the array).
    idle : Out(1)
        No step offered (``~o.valid``).
    """

    def __init__(self, params: EngineParams):
        require_engine_params(self, params)
        self.params = p = params
        super().__init__({
            "desc": In(desc_layout()), "start": In(1), "active": In(1), "end": Out(1),
            "act_addr": Out(DESC_BITS), "act_en": Out(1),
            "act_data": In(data.ArrayLayout(unsigned(p.abits), p.rows)),
            "weight_addr": Out(DESC_BITS), "weight_data": In(unsigned(p.weight_word_bits)),
            "o": Out(stream.Signature(array_step_layout(p.rows, p.cols, p.wbits, p.abits, p.acc_bits))),
            "last_out": Out(1), "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        R = self.params.rows
        d = self.desc
        n_it, n_ot, n_span, n_pix = d.n_it, d.n_ot, d.n_span, d.n_pix
        k, ct, stride, pad, in_h, in_w, out_w = d.k, d.ct, d.stride, d.pad, d.in_h, d.in_w, d.out_w

        ot = Signal(DESC_BITS)                    # output tile
        it = Signal(DESC_BITS)                    # cycle within the tile (steps while it < n_it)
        w_addr = Signal(DESC_BITS)
        # output pixel (pix, ox), its receptive field's tap (row iy, column kx/ix, channel tile ctc);
        # the input word of the tap is tap_addr
        pix = Signal(DESC_BITS)
        ox = Signal(DESC_BITS)
        pix_addr = Signal(signed(DESC_BITS + 4))     # input word of tap (0, 0) of this pixel
        iy0 = Signal(signed(DESC_BITS + 2))          # input row / column of tap (0, 0)
        ix0 = Signal(signed(DESC_BITS + 2))
        tap_addr = Signal(signed(DESC_BITS + 4))
        ot_addr = Signal(signed(DESC_BITS + 4))      # input word of tap (0, 0) of this output tile
        kx = Signal(DESC_BITS)
        ctc = Signal(DESC_BITS)
        iy = Signal(signed(DESC_BITS + 2))
        ix = Signal(signed(DESC_BITS + 2))
        tap_valid = Signal()
        m.d.comb += tap_valid.eq((iy >= 0) & (iy < in_h) & (ix >= 0) & (ix < in_w))
        m.d.comb += [self.act_addr.eq(tap_addr), self.weight_addr.eq(w_addr)]

        # the step issued last cycle: memory data becomes an array step
        feed_v, feed_first, feed_last = self.o.valid, Signal(), Signal()
        feed_pad = Signal()                                  # the tap lies in the zero padding
        m.d.sync += feed_v.eq(0)
        step = self.o.payload
        m.d.comb += [step.first.eq(feed_first), step.last.eq(feed_last), step.w.eq(self.weight_data)]
        m.d.comb += [step.x[r].eq(Mux(feed_pad, 0, self.act_data[r])) for r in range(R)]
        m.d.comb += [self.last_out.eq(self.o.valid & self.o.ready & feed_last), self.idle.eq(~feed_v)]

        tile_end = (it == n_span - 1) | ((it == n_it - 1) & (ot == n_ot - 1) & (pix == n_pix - 1))
        m.d.comb += self.end.eq(self.active & tile_end & (ot == n_ot - 1) & (pix == n_pix - 1))

        with m.If(self.start):
            m.d.sync += [ot.eq(0), it.eq(0), w_addr.eq(d.w_base), pix.eq(0), ox.eq(0), pix_addr.eq(d.pix0),
                         iy0.eq(-pad), ix0.eq(-pad), tap_addr.eq(d.pix0), ot_addr.eq(d.pix0), iy.eq(-pad),
                         ix.eq(-pad), kx.eq(0), ctc.eq(0)]
        with m.Elif(self.active):
            m.d.sync += it.eq(it + 1)
            with m.If(it < n_it):
                m.d.comb += self.act_en.eq(1)
                m.d.sync += [feed_v.eq(1), feed_first.eq(it == 0), feed_last.eq(it == n_it - 1),
                             feed_pad.eq(~tap_valid), w_addr.eq(w_addr + 1)]
                # next tap: channel tiles fastest, then kernel columns, then kernel rows
                with m.If(ctc == ct - 1):
                    m.d.sync += ctc.eq(0)
                    with m.If(kx == k - 1):
                        m.d.sync += [kx.eq(0), ix.eq(ix0), iy.eq(iy + 1), tap_addr.eq(tap_addr + d.krow_jump)]
                    with m.Else():
                        m.d.sync += [kx.eq(kx + 1), ix.eq(ix + 1), tap_addr.eq(tap_addr + d.kx_jump)]
                with m.Else():
                    m.d.sync += [ctc.eq(ctc + 1), tap_addr.eq(tap_addr + 1)]
            # the tile's last cycle (the run's last tile ends with its last step: no idle cycles)
            with m.If(tile_end):
                m.d.sync += [it.eq(0), kx.eq(0), ctc.eq(0)]
                with m.If(ot == n_ot - 1):
                    m.d.sync += ot.eq(0)
                    with m.If(pix != n_pix - 1):       # next output pixel: weights again
                        m.d.sync += [pix.eq(pix + 1), w_addr.eq(d.w_base)]
                        with m.If(ox == out_w - 1):
                            m.d.sync += [ox.eq(0), pix_addr.eq(pix_addr + d.row_step), iy0.eq(iy0 + stride),
                                         ix0.eq(-pad), tap_addr.eq(pix_addr + d.row_step),
                                         ot_addr.eq(pix_addr + d.row_step), iy.eq(iy0 + stride), ix.eq(-pad)]
                        with m.Else():
                            m.d.sync += [ox.eq(ox + 1), pix_addr.eq(pix_addr + d.col_step),
                                         ix0.eq(ix0 + stride), tap_addr.eq(pix_addr + d.col_step),
                                         ot_addr.eq(pix_addr + d.col_step), iy.eq(iy0), ix.eq(ix0 + stride)]
                with m.Else():                       # next output tile (depthwise: its own channel tiles)
                    m.d.sync += [ot.eq(ot + 1), tap_addr.eq(ot_addr + d.ot_step),
                                 ot_addr.eq(ot_addr + d.ot_step), iy.eq(iy0), ix.eq(ix0)]
        return m
