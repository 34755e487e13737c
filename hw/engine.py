"""The layer engine: memories, host ports, sequencer, POST MAC array, rescale, pooling, ASQ unit.

Ports and memory map are those of ``docs/engine.md``; the schedule below is what ``cycles``
counts and what :func:`hw.program.predicted_cycles` computes. The arithmetic is
``docs/arithmetic.md`` ("Hardware-sized stage arithmetic"), defined once in :mod:`golden.arith`:
16-bit saturating values, 15-bit multiplier mantissas, ASQ factors as ``{mant: 15, shift: 6}``,
32-bit adapter accumulators.

Schedule
--------
A run starts in the cycle after ``start`` is seen; ``cycles`` counts every cycle from then until,
and including, the cycle at whose end ``done`` rises. Per layer:

1. ``LAYER`` 1 cycle, ``DESC`` ``DESC_FIELDS + 1`` cycles (one field a cycle, plus the cycle that
   latches the last).
2. ``FEED``: for every output pixel and output tile ``max(n_it, C)`` cycles: one weight word and
   one R-wide input word a cycle for ``n_it`` cycles, then idle cycles so that the drain (one
   accumulator a cycle) keeps up; the run's very last tile ends with its last step.
3. ``TAIL`` ``TAIL_CYCLES + v_last``: the last tile's values leave the channel rescale unit.
4. Non-final layers then walk the value buffer channel by channel (``n_out * pooled_pixels *
   PK**2`` cycles, one max- or sum-pooling tap a cycle) and flush for ``WALK_FLUSH`` cycles. With an ASQ
   quantizer the first walk sums the pooled values per channel, ``ADAPT`` evaluates the adapter
   one term a cycle (``HID * (n_out + 2) + 1`` cycles), ``TABLE`` (``ADAPT_TAIL`` cycles) looks
   up ``beta`` and ``1/beta`` for the sample, and a second walk quantizes.

Once per run a final ``LAYER`` cycle raises ``done``. The count does not depend on the data
(:func:`hw.program.layer_cycles`).

Dataflow
--------
Activation banks: R memories of ``act_words`` x ``abits``; element ``(c, y, x)`` of a ``C x H x W``
region at word ``b`` is in bank ``c % R`` at word ``b + (y*W + x)*ceil(C/R) + c // R`` (HWC). The
sequencer walks output pixels row by row and, for each, the taps ``(ky, kx)`` of its receptive
field and the ``CT`` channel tiles of each tap with incremental address registers (``pix0``,
``col_step``, ``row_step``, ``krow_jump`` from the descriptor); taps outside the input feed
zeros. Weight memory: one ``R*C*W``-bit word per tile, tiles ``(ot, it)`` consecutive from
``w_base`` and read again for every pixel. The array's accumulators (which start at 0) drain one
a cycle through :class:`hw.rescale.ChannelRescale` (``acc >> ACC_SHIFT``, per-channel ``mult``,
``shift``, ``bias`` from CHAN, the multiplier scaled by the input factor with ``INPUT_BETA``, the
aligned residual, saturation to 16 bits, ReLU) into the value buffer at ``pixel*n_out + o`` (the final
layer: into RESULT). The walk reads the value buffer, max- or sum-pools (a sum: in a 32-bit register, then
``saturate(round_half_up(sum / 2**POOL_SHIFT))``), with ``PRESCALE`` (ASQ only) re-expresses the pooled
value as ``saturate(round_half_up(v * pre_mult / 2**pre_shift))`` in the same pipeline stage, and either accumulates the channel sums (ASQ) or feeds
:class:`hw.rescale.ActQuantizer`, whose codes go to word ``out_base + pooled_pixel*oct + o // R``,
bank ``o % R``; a layer whose values a later layer adds also stores them (the pooled values, never
prescaled) in the residual memory, and that later layer's rescale unit adds them (aligned) before
its ReLU. A layer reads any earlier layer's output region (``in_base``/``pix0``), so
branches need no copies. Descriptors: a 16-bit memory at ``layer * 64 + field``.

Host notes
----------
Writes to addresses outside a memory (or to a bank ``>= R``, a descriptor field ``>= DESC_FIELDS``)
are ignored; such reads answer 0. ``n_layers`` above ``max_layers`` is clamped to it. Take every
read response before ``start``: during a run the activation ports belong to the sequencer.
``CTRL`` 1 is the network input's ASQ factor ``{mant: 15, shift: 6}`` (21 bits, LSB first; write it
for each sample); the factor each ASQ
layer chooses goes to a per-layer factor memory, from which a layer with ASQ input codes takes
its source layer's (descriptor ``SRC``), so branches may interleave ASQ layers freely.

By construction the array's output is always taken in time, the rescale unit and the quantizer
are never blocked, so the sequencer streams without stalls and the schedule above is exact; the
streams keep valid/ready so the components stay reusable.
"""

from __future__ import annotations

from amaranth.hdl import Module, signed, unsigned
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from golden import arith
from hw.array import PostArray
from hw.asq_unit import AsqUnit, check_host_width
from hw.feed import FeedGenerator
from hw.host_port import HostPort, host_read_layout, host_write_layout
from hw.pool import PoolingWalk
from hw.lut import checked
from hw.program import CHAN_BITS, EngineParams, require_engine_params
from hw.rescale import chan_layout
from hw.rescale_unit import RescaleUnit
from hw.sequencer import Sequencer

__all__ = ["PostEngine", "host_write_layout", "host_read_layout", "COMPONENTS"]

#: The engine's components: submodule name -> what it is (``docs/engine.md``, "Components"). The
#: memories shared between components (ACT, WEIGHT, CHAN, value buffer, RESULT, residual) belong
#: to the top module itself.
COMPONENTS = {
    "host": "host port (hw.host_port.HostPort)",
    "seq": "sequencer and descriptor memory (hw.sequencer.Sequencer)",
    "feed": "feed/address generator (hw.feed.FeedGenerator)",
    "array": "POST MAC array (hw.array.PostArray)",
    "rescale": "channel rescale unit (hw.rescale_unit.RescaleUnit)",
    "pool": "pooling walk and quantizer (hw.pool.PoolingWalk)",
    "asq": "ASQ unit: sums, adapter, factor tables (hw.asq_unit.AsqUnit)",
}


class PostEngine(wiring.Component):
    """Runs a stack of convolution / fully-connected POST layers loaded at run time (``docs/engine.md``).

    The top instantiates the components of :data:`COMPONENTS` and the shared memories and wires
    them; the activation banks belong to the host port while idle and to the feed generator (reads)
    and the pooling walk's quantizer (writes) while busy.

    Parameters
    ----------
    params : EngineParams
        Array shape, widths and memory depths.

    Attributes
    ----------
    host_wr : In(stream.Signature(host_write_layout(params)))
        Memory/descriptor/control writes; ``ready`` while idle (``busy`` low).
    rd_req : In(stream.Signature(host_read_layout(params)))
        Read requests; ``ready`` while idle and no response is blocked.
    rd_resp : Out(stream.Signature(unsigned(data_bits)))
        One response per request, in order, valid the cycle after the request is accepted,
        held until taken (ACT zero-extended, RESULT sign-extended, other selects 0).
    start : In(1)
        One-cycle pulse while idle: run the layers in descriptor slots ``first_layer`` (``CTRL`` 2,
        default 0) up to ``n_layers`` (``CTRL`` 0) exclusive.
    busy : Out(1)
        High from the cycle after ``start`` until the run ends.
    done : Out(1)
        High from the end of a run until the next ``start`` (low after reset).
    cycles : Out(32)
        Cycles of the last run (see the module docstring's "Schedule").
    """

    def __init__(self, params: EngineParams):
        require_engine_params(self, params)
        checked(self, lambda: check_host_width(params))
        self.params = params
        super().__init__(self.members_for(params))

    @staticmethod
    def members_for(params: EngineParams) -> dict:
        """The signature members (ports) of the engine for ``params``."""
        return {
            "host_wr": In(stream.Signature(host_write_layout(params))),
            "rd_req": In(stream.Signature(host_read_layout(params))),
            "rd_resp": Out(stream.Signature(unsigned(params.data_bits))),
            "start": In(1),
            "busy": Out(1),
            "done": Out(1),
            "cycles": Out(32),
        }

    def elaborate(self, platform):
        m = Module()
        p = self.params
        R, A, VB = p.rows, p.abits, arith.VALUE_BITS

        # --- the memories the components share -----------------------------------------
        act_mem = [memory.Memory(shape=unsigned(A), depth=p.act_words, init=[]) for _ in range(R)]
        for r, mem in enumerate(act_mem):
            m.submodules[f"act{r}"] = mem
        act_wr = [mem.write_port() for mem in act_mem]
        act_rd = [mem.read_port() for mem in act_mem]
        m.submodules.weight = weight_mem = memory.Memory(shape=unsigned(p.weight_word_bits),
                                                         depth=p.weight_words, init=[])
        weight_wr, weight_rd = weight_mem.write_port(), weight_mem.read_port()
        m.submodules.chan = chan_mem = memory.Memory(shape=chan_layout(), depth=p.chan_words, init=[])
        chan_wr, chan_rd = chan_mem.write_port(), chan_mem.read_port()
        m.submodules.value = value_mem = memory.Memory(shape=signed(VB), depth=p.value_words, init=[])
        value_wr, value_rd = value_mem.write_port(), value_mem.read_port()
        m.submodules.result = result_mem = memory.Memory(shape=signed(VB), depth=p.result_words, init=[])
        result_wr, result_rd = result_mem.write_port(), result_mem.read_port()
        m.submodules.res = res_mem = memory.Memory(shape=signed(VB), depth=p.res_words, init=[])
        res_wr, res_rd = res_mem.write_port(), res_mem.read_port()

        # --- the components ----------------------------------------------------------------
        m.submodules.host = host = HostPort(p)
        m.submodules.seq = seq = Sequencer(p)
        m.submodules.feed = feed = FeedGenerator(p)
        m.submodules.array = array = PostArray(R, p.cols, p.wbits, A, p.frac_bits, p.acc_bits)
        m.submodules.rescale = rsu = RescaleUnit(p)
        m.submodules.pool = pool = PoolingWalk(p)
        m.submodules.asq = asq = AsqUnit(p)
        desc = seq.desc
        final = desc.flags[0]

        # host port <-> engine ports, CTRL registers, host writes
        wiring.connect(m, wiring.flipped(self.host_wr), host.host_wr)
        wiring.connect(m, wiring.flipped(self.rd_req), host.rd_req)
        wiring.connect(m, host.rd_resp, wiring.flipped(self.rd_resp))
        m.d.comb += [host.busy.eq(seq.busy), seq.start.eq(self.start), self.busy.eq(seq.busy),
                     self.done.eq(seq.done), self.cycles.eq(seq.cycles),
                     seq.n_layers.eq(host.n_layers), seq.first_layer.eq(host.first_layer),
                     seq.desc_we.eq(host.desc_we), seq.wr_addr.eq(host.wr_addr), seq.wr_data.eq(host.wr_data),
                     asq.wr_addr.eq(host.wr_addr), asq.wr_data.eq(host.wr_data),
                     asq.adapt_we.eq(host.adapt_we), asq.table_we.eq(host.table_we), asq.beta_in.eq(host.beta_in)]
        m.d.comb += [weight_wr.addr.eq(host.wr_addr), weight_wr.data.eq(host.wr_data[:p.weight_word_bits]),
                     weight_wr.en.eq(host.weight_we),
                     chan_wr.addr.eq(host.wr_addr), chan_wr.data.eq(host.wr_data[:CHAN_BITS]),
                     chan_wr.en.eq(host.chan_we),
                     result_rd.addr.eq(host.result_raddr), result_rd.en.eq(host.result_re),
                     host.result_rdata.eq(result_rd.data)]

        # sequencer -> components: the descriptor and the phase handshakes
        m.d.comb += [feed.desc.eq(desc), rsu.desc.eq(desc), pool.desc.eq(desc), asq.desc.eq(desc),
                     asq.layer.eq(seq.layer),
                     feed.start.eq(seq.feed_start), rsu.start.eq(seq.feed_start), feed.active.eq(seq.feeding),
                     seq.feed_end.eq(feed.end), seq.feed_idle.eq(feed.idle), seq.rescale_idle.eq(rsu.idle),
                     pool.start.eq(seq.walk_start), pool.sum_pass.eq(seq.sum_pass), seq.walk_end.eq(pool.end),
                     asq.quant_from_desc.eq(seq.quant_from_desc), asq.adapt_start.eq(seq.adapt_start),
                     asq.adapting.eq(seq.adapting), seq.adapt_end.eq(asq.adapt_end),
                     asq.table_commit.eq(seq.table_commit)]

        # datapath: feed -> array -> rescale -> value buffer / RESULT -> pooling walk -> codes / sums
        wiring.connect(m, feed.o, array.i)
        wiring.connect(m, array.o, rsu.i)
        m.d.comb += [weight_rd.addr.eq(feed.weight_addr), feed.weight_data.eq(weight_rd.data),
                     rsu.tile_in.eq(feed.last_out), rsu.beta.eq(asq.beta),
                     chan_rd.addr.eq(rsu.param_addr), chan_rd.en.eq(rsu.param_en), rsu.param.eq(chan_rd.data),
                     res_rd.addr.eq(rsu.res_addr), res_rd.en.eq(rsu.res_en), rsu.res.eq(res_rd.data),
                     rsu.o.ready.eq(1),
                     value_wr.addr.eq(rsu.o.payload.addr), value_wr.data.eq(rsu.o.payload.value),
                     value_wr.en.eq(rsu.o.valid & ~final),
                     result_wr.addr.eq(rsu.o.payload.addr), result_wr.data.eq(rsu.o.payload.value),
                     result_wr.en.eq(rsu.o.valid & final)]
        m.d.comb += [value_rd.addr.eq(pool.val_addr), value_rd.en.eq(pool.val_en), pool.val_data.eq(value_rd.data),
                     res_wr.addr.eq(pool.res_addr), res_wr.data.eq(pool.res_data), res_wr.en.eq(pool.res_en),
                     pool.inv.eq(asq.inv), pool.codes.ready.eq(1)]
        wiring.connect(m, pool.sums, asq.sums)

        # activation banks: host while idle; the feed reads and the quantizer writes while busy
        codes = pool.codes
        for r in range(R):
            m.d.comb += [feed.act_data[r].eq(act_rd[r].data), host.act_rdata[r].eq(act_rd[r].data)]
            with m.If(seq.busy):
                m.d.comb += [act_rd[r].addr.eq(feed.act_addr), act_rd[r].en.eq(feed.act_en),
                             act_wr[r].addr.eq(codes.payload.addr), act_wr[r].data.eq(codes.payload.code),
                             act_wr[r].en.eq(codes.valid & (codes.payload.bank == r))]
            with m.Else():
                m.d.comb += [act_rd[r].addr.eq(host.act_raddr), act_rd[r].en.eq(host.act_re),
                             act_wr[r].addr.eq(host.act_word), act_wr[r].data.eq(host.wr_data[:A]),
                             act_wr[r].en.eq(host.act_we[r])]
        return m
