"""The channel rescale unit: drains the array's C accumulators one a cycle through
:class:`hw.rescale.ChannelRescale` and numbers the values for the value buffer (``docs/engine.md``)."""

from __future__ import annotations

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden import arith
from hw.program import DESC_BITS, EngineParams, require_engine_params
from hw.rescale import RESCALE_LATENCY, RES_MULT_BITS, ChannelRescale, chan_layout, clamp_shift, factor_layout
from hw.sequencer import desc_layout

__all__ = ["RescaleUnit", "value_layout"]


def value_layout() -> data.StructLayout:
    """A rescaled value and its element index: ``{addr: 16, value: signed 16}``, LSB first
    (``golden.arith.VALUE_BITS``)."""
    return data.StructLayout({"addr": unsigned(DESC_BITS), "value": signed(arith.VALUE_BITS)})


class RescaleUnit(wiring.Component):
    """Array tiles in, one rescaled value a cycle out, numbered ``pixel * N_OUT + o``.

    A tile of C accumulators taken on ``i`` drains one accumulator a cycle (``C`` of them; the
    pixel's last output tile ``V_LAST``) into :class:`hw.rescale.ChannelRescale`, channel
    ``ot * C + c`` of the pixel. ``i.ready`` is high when the drain is empty or gives its last
    accumulator this cycle, so a tile that arrives every ``max(N_IT, C)`` cycles is always taken
    at once. Values leave on ``o`` in order, ``addr`` counting from 0 since ``start``.

    Latency: an accumulator drained at edge ``t`` is on ``o`` after edge ``t + RESCALE_LATENCY``;
    a tile taken at edge ``t`` starts draining in the next cycle. Parameters (descriptor, ``beta``)
    must stay constant while values are in flight.

    Parameters
    ----------
    params : EngineParams
        ``cols`` (C), ``acc_bits``.

    The arithmetic is :class:`hw.rescale.ChannelRescale`'s (16-bit saturating values).

    Attributes
    ----------
    desc : In(desc_layout())
        ``N_OT``, ``V_LAST``, ``C_BASE``, ``FLAGS`` (``INPUT_BETA``, ``RELU``, ``ADD_RES``),
        ``RELU_FLOOR``, ``RES_MULT`` (its low 15 bits: ``RES_MULT < 2**15``), ``RES_SHIFT`` (1..63),
        ``ACC_SHIFT`` (values above 63 act as 63).
    start : In(1)
        Pulse before a layer: output tile 0 and element 0 next.
    beta : In(hw.rescale.factor_layout())
        ASQ factor ``{mant: 15, shift: 6}`` of the layer's input codes (used with ``INPUT_BETA``).
    i : In(stream.Signature(data.ArrayLayout(signed(acc_bits), C)))
        Finished tiles from the array.
    tile_in : In(1)
        A tile's last step entered the array this cycle (counts tiles in flight for ``idle``).
    param_addr, param_en : Out(16), Out(1)
    param : In(chan_layout())
        Synchronous read port of the CHAN memory (one cycle latency).
    res_addr, res_en : Out(16), Out(1)
    res : In(signed(16))
        Synchronous read port of the residual memory.
    o : Out(stream.Signature(value_layout()))
        Rescaled values; ``o.ready`` must be high when ``o.valid`` is (the pipeline would stall,
        the engine never stalls it).
    idle : Out(1)
        No tile in the array, none draining, and at most the last value leaving this cycle.
    """

    def __init__(self, params: EngineParams):
        require_engine_params(self, params)
        self.params = p = params
        super().__init__({
            "desc": In(desc_layout()), "start": In(1), "beta": In(factor_layout()),
            "i": In(stream.Signature(data.ArrayLayout(signed(p.acc_bits), p.cols))), "tile_in": In(1),
            "param_addr": Out(DESC_BITS), "param_en": Out(1), "param": In(chan_layout()),
            "res_addr": Out(DESC_BITS), "res_en": Out(1), "res": In(signed(arith.VALUE_BITS)),
            "o": Out(stream.Signature(value_layout())), "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        C = p.cols
        d = self.desc
        flags = d.flags
        m.submodules.rescale = rs = ChannelRescale(p.acc_bits)

        drain = Signal(data.ArrayLayout(signed(p.acc_bits), C))
        drain_left = Signal(range(C + 1))
        drain_ch = Signal(DESC_BITS)                 # output channel of drain[0]
        cap_ot = Signal(DESC_BITS)                   # output tile (within its pixel) captured next
        cap_o0 = Signal(DESC_BITS)                   # its first channel, cap_ot * C
        tiles_in_flight = Signal(2)                  # last steps accepted, outputs not yet captured
        push = rs.i.valid & rs.i.ready
        m.d.comb += self.i.ready.eq((drain_left == 0) | ((drain_left == 1) & push))
        capture = self.i.valid & self.i.ready
        with m.If(self.tile_in & ~capture):
            m.d.sync += tiles_in_flight.eq(tiles_in_flight + 1)
        with m.Elif(capture & ~self.tile_in):
            m.d.sync += tiles_in_flight.eq(tiles_in_flight - 1)
        push_idx = Signal(DESC_BITS)                 # element index (pixel * n_out + o) of the next push
        with m.If(push):
            m.d.sync += push_idx.eq(push_idx + 1)
        m.d.comb += [rs.use_res.eq(flags[6]), rs.res_mult.eq(d.res_mult[:RES_MULT_BITS]), rs.res_shift.eq(d.res_shift),
                     rs.acc_shift.eq(clamp_shift(d.acc_shift, 63)),
                     rs.i.payload.idx.eq(push_idx), self.res_addr.eq(rs.res_addr), self.res_en.eq(rs.res_en),
                     rs.res.eq(self.res)]
        m.d.comb += [rs.i.valid.eq(drain_left != 0), rs.i.payload.acc.eq(drain[0]), rs.i.payload.ch.eq(drain_ch),
                     rs.beta.eq(self.beta), rs.use_beta.eq(flags[1]), rs.relu.eq(flags[2]),
                     rs.relu_floor.eq(d.relu_floor), rs.c_base.eq(d.c_base),
                     self.param_addr.eq(rs.param_addr), self.param_en.eq(rs.param_en), rs.param.eq(self.param)]
        with m.If(capture):
            m.d.sync += [drain.eq(self.i.payload), drain_ch.eq(cap_o0)]
            with m.If(cap_ot == d.n_ot - 1):
                m.d.sync += [drain_left.eq(d.v_last), cap_ot.eq(0), cap_o0.eq(0)]
            with m.Else():
                m.d.sync += [drain_left.eq(C), cap_ot.eq(cap_ot + 1), cap_o0.eq(cap_o0 + C)]
        with m.Elif(push):
            m.d.sync += [drain[c].eq(drain[c + 1]) for c in range(C - 1)]
            m.d.sync += [drain_left.eq(drain_left - 1), drain_ch.eq(drain_ch + 1)]

        # values out, numbered from 0 since start
        rs_in_flight = Signal(range(RESCALE_LATENCY + 2))
        pop = rs.o.valid & rs.o.ready
        with m.If(push & ~pop):
            m.d.sync += rs_in_flight.eq(rs_in_flight + 1)
        with m.Elif(pop & ~push):
            m.d.sync += rs_in_flight.eq(rs_in_flight - 1)
        v_idx = Signal(DESC_BITS)
        with m.If(pop):
            m.d.sync += v_idx.eq(v_idx + 1)
        m.d.comb += [self.o.valid.eq(rs.o.valid), rs.o.ready.eq(self.o.ready),
                     self.o.payload.addr.eq(v_idx), self.o.payload.value.eq(rs.o.payload)]
        m.d.comb += self.idle.eq((tiles_in_flight == 0) & (drain_left == 0)
                                 & ((rs_in_flight == 0) | ((rs_in_flight == 1) & pop)))
        with m.If(self.start):
            m.d.sync += [cap_ot.eq(0), cap_o0.eq(0), v_idx.eq(0), push_idx.eq(0)]
        return m
