"""The layer engine: memories, host ports, sequencer, POST MAC array, rescale, pooling, ASQ unit.

Ports and memory map are those of ``docs/engine.md``; the schedule below is what ``cycles``
counts and what :func:`hw.program.predicted_cycles` computes. The arithmetic is
``docs/arithmetic.md`` ("Integer graph (v2)"), defined once in :mod:`golden.arith`.

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
a cycle through :class:`hw.rescale.ChannelRescale` (``apply_beta``, per-channel ``mult``,
``offset``, ``shift`` from CHAN, ReLU) into the value buffer at ``pixel*n_out + o`` (the final
layer: into RESULT). The walk reads the value buffer, max- or sum-pools, with ``PRESCALE`` (ASQ
only) re-expresses the pooled value as ``round_half_up(v * pre_mult / 2**pre_shift)`` in the same
pipeline stage, and either accumulates the channel sums (ASQ) or feeds
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
``CTRL`` 1 is the network input's ASQ factor (write it for each sample); the factor each ASQ
layer chooses goes to a per-layer factor memory, from which a layer with ASQ input codes takes
its source layer's (descriptor ``SRC``), so branches may interleave ASQ layers freely.

By construction the array's output is always taken in time, the rescale unit and the quantizer
are never blocked, so the sequencer streams without stalls and the schedule above is exact; the
streams keep valid/ready so the components stay reusable.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from golden import arith
from hw.array import PostArray
from hw.lut import checked
from hw.program import (ADAPT_TAIL, CHAN_BITS, DESC_BITS, DESC_FIELDS, DESC_STRIDE, SIGNED_FIELDS, WALK_FLUSH, Ctrl,
                        DescField, EngineParams, Sel)
from hw.rescale import RESCALE_LATENCY, ActQuantizer, ChannelRescale, chan_layout

#: Entries of the ASQ factor tables (``golden.arith.asq_table_index_count``).
TABLE_ENTRIES = arith.asq_table_index_count()

__all__ = ["PostEngine", "host_write_layout", "host_read_layout"]


class _State(enum.Enum, shape=4):
    """Sequencer states (see the module docstring's "Schedule")."""

    IDLE = 0
    LAYER = 1
    DESC = 2
    FEED = 3
    TAIL = 4
    WALK = 5
    FLUSH = 6
    ADAPT = 7
    TABLE = 8


def host_write_layout(params: EngineParams) -> data.StructLayout:
    """``host_wr`` payload: ``{sel: 3, addr: 16, data: data_bits}``, LSB first."""
    return data.StructLayout({"sel": unsigned(3), "addr": unsigned(params.addr_bits),
                              "data": unsigned(params.data_bits)})


def host_read_layout(params: EngineParams) -> data.StructLayout:
    """``rd_req`` payload: ``{sel: 3, addr: 16}``, LSB first."""
    return data.StructLayout({"sel": unsigned(3), "addr": unsigned(params.addr_bits)})


class PostEngine(wiring.Component):
    """Runs a stack of convolution / fully-connected POST layers loaded at run time (``docs/engine.md``).

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
        def check():
            if not isinstance(params, EngineParams):
                raise TypeError(f"params must be an EngineParams, got {type(params).__name__}")
        checked(self, check)
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
        R, C, A = p.rows, p.cols, p.abits
        bank_bits = p.bank_bits
        VB = p.value_bits

        # --- memories ---------------------------------------------------------------
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
        m.submodules.desc = desc_mem = memory.Memory(shape=unsigned(DESC_BITS),
                                                     depth=p.max_layers * DESC_STRIDE, init=[])
        desc_wr, desc_rd = desc_mem.write_port(), desc_mem.read_port()
        m.submodules.adapt = adapt_mem = memory.Memory(shape=signed(arith.ADAPTER_ACC_BITS),
                                                       depth=p.adapter_words, init=[])
        adapt_wr, adapt_rd = adapt_mem.write_port(), adapt_mem.read_port()
        m.submodules.res = res_mem = memory.Memory(shape=signed(VB), depth=p.res_words, init=[])
        res_wr, res_rd = res_mem.write_port(), res_mem.read_port()
        m.submodules.sums = sums_mem = memory.Memory(shape=signed(arith.SUM_BITS), depth=p.max_channels, init=[])
        sums_wr, sums_rd = sums_mem.write_port(), sums_mem.read_port()
        tb = arith.ASQ_TABLE_BITS
        m.submodules.table = table_mem = memory.Memory(shape=unsigned(2 * tb), depth=TABLE_ENTRIES, init=[])
        table_wr, table_rd = table_mem.write_port(), table_mem.read_port()

        m.submodules.array = array = PostArray(R, C, p.wbits, A, p.frac_bits, p.acc_bits)
        m.submodules.rescale = rs = ChannelRescale(p.acc_bits, VB)
        tag_bits = DESC_BITS + bank_bits
        m.submodules.quant = qz = ActQuantizer(tag_bits, VB)

        # --- control registers ------------------------------------------------------
        busy = self.busy
        n_layers = Signal(range(p.max_layers + 1))
        first_layer = Signal(range(p.max_layers + 1))
        beta_in = Signal(tb)            # factor of the network input's codes (host, CTRL BETA)
        # the factor each ASQ layer chose, kept per layer: a layer reads its source layer's (SRC)
        m.submodules.betas = betas_mem = memory.Memory(shape=unsigned(tb), depth=p.max_layers, init=[])
        betas_wr, betas_rd = betas_mem.write_port(), betas_mem.read_port()
        beta_cur = Signal(tb)           # factor of the current layer's input codes
        inv_cur = Signal(tb)            # quantizer multiplier of the current layer

        # --- host writes (only while idle) ------------------------------------------
        wr = self.host_wr.payload
        m.d.comb += self.host_wr.ready.eq(~busy)
        do_wr = self.host_wr.valid & ~busy
        wr_bank = wr.addr[:bank_bits]
        wr_word = wr.addr[bank_bits:]
        desc_field = wr.addr[:6]
        desc_layer = wr.addr[6:]

        # --- host reads (only while idle) -------------------------------------------
        req = self.rd_req.payload
        resp_valid = self.rd_resp.valid
        m.d.comb += self.rd_req.ready.eq(~busy & (~resp_valid | self.rd_resp.ready))
        do_rd = self.rd_req.valid & self.rd_req.ready
        rd_bank = req.addr[:bank_bits]
        rd_word = req.addr[bank_bits:]
        resp_sel = Signal(3)
        resp_bank = Signal(bank_bits)
        resp_ok = Signal()
        with m.If(do_rd):
            m.d.sync += [resp_valid.eq(1), resp_sel.eq(req.sel), resp_bank.eq(rd_bank)]
            with m.Switch(req.sel):
                with m.Case(Sel.ACT):
                    m.d.sync += resp_ok.eq((rd_bank < R) & (rd_word < p.act_words))
                with m.Case(Sel.RESULT):
                    m.d.sync += resp_ok.eq(req.addr < p.result_words)
                with m.Default():
                    m.d.sync += resp_ok.eq(0)
        with m.Elif(self.rd_resp.ready):
            m.d.sync += resp_valid.eq(0)
        act_data = Array(Cat(port.data) for port in act_rd)
        with m.If(resp_ok & (resp_sel == Sel.ACT)):
            m.d.comb += self.rd_resp.payload.eq(act_data[resp_bank])        # zero-extended
        with m.Elif(resp_ok & (resp_sel == Sel.RESULT)):
            m.d.comb += self.rd_resp.payload.eq(result_rd.data)             # sign-extended
        m.d.comb += [result_rd.addr.eq(req.addr), result_rd.en.eq(do_rd & (req.sel == Sel.RESULT))]

        # --- descriptor of the current layer ----------------------------------------
        layer = Signal(range(p.max_layers + 1))
        fields = {f: Signal(signed(DESC_BITS) if f in SIGNED_FIELDS else unsigned(DESC_BITS), name=f"d_{f.name.lower()}")
                  for f in DescField}
        d = {f.name.lower(): s for f, s in fields.items()}
        n_it, n_ot, n_out, n_span = d["n_it"], d["n_ot"], d["n_out"], d["n_span"]
        k, ct, stride, pad, in_h, in_w, out_w = d["k"], d["ct"], d["stride"], d["pad"], d["in_h"], d["in_w"], d["out_w"]
        n_pix, oct_, v_last = d["n_pix"], d["oct"], d["v_last"]
        flags = d["flags"]
        final = flags[0]
        use_beta = flags[1]
        relu = flags[2]
        asq = flags[3]
        adapter_relu = flags[4]
        save_res = flags[5]
        add_res = flags[6]
        pool_sum = flags[7]
        prescale = flags[8]

        # --- sequencer state ----------------------------------------------------------
        fcnt = Signal(range(DESC_FIELDS + 1))     # descriptor field being read
        ot = Signal(DESC_BITS)                    # output tile
        it = Signal(DESC_BITS)                    # cycle within the tile (steps while it < n_it)
        w_addr = Signal(DESC_BITS)
        m.d.comb += [weight_rd.addr.eq(w_addr), desc_rd.addr.eq(Cat(fcnt[:6], layer))]

        # convolution walk: output pixel (pix, ox), its receptive field's tap (row iy, column kx/ix,
        # channel tile ctc); the input word of the tap is tap_addr
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

        # feed: memory data of the step issued last cycle becomes an array step
        feed_v = Signal()
        feed_first = Signal()
        feed_last = Signal()
        feed_pad = Signal()                                  # the tap lies in the zero padding
        m.d.sync += feed_v.eq(0)
        step = array.i.payload
        m.d.comb += [array.i.valid.eq(feed_v), step.first.eq(feed_first), step.last.eq(feed_last),
                     step.w.eq(weight_rd.data)]
        m.d.comb += [step.x[r].eq(Mux(feed_pad, 0, act_rd[r].data)) for r in range(R)]

        # --- drain: the array's C accumulators, one valid output a cycle into the rescale unit
        drain = Signal(data.ArrayLayout(signed(p.acc_bits), C))
        drain_left = Signal(range(C + 1))
        drain_ch = Signal(DESC_BITS)                 # output channel of drain[0]
        cap_ot = Signal(DESC_BITS)                   # output tile (within its pixel) captured next
        cap_o0 = Signal(DESC_BITS)                   # its first channel, cap_ot * C
        tiles_in_flight = Signal(2)                  # last steps accepted, outputs not yet captured
        push = rs.i.valid & rs.i.ready
        m.d.comb += array.o.ready.eq((drain_left == 0) | ((drain_left == 1) & push))
        capture = array.o.valid & array.o.ready
        last_in = array.i.valid & array.i.ready & feed_last
        with m.If(last_in & ~capture):
            m.d.sync += tiles_in_flight.eq(tiles_in_flight + 1)
        with m.Elif(capture & ~last_in):
            m.d.sync += tiles_in_flight.eq(tiles_in_flight - 1)
        push_idx = Signal(DESC_BITS)                 # element index (pixel * n_out + o) of the next push
        with m.If(push):
            m.d.sync += push_idx.eq(push_idx + 1)
        m.d.comb += [rs.use_res.eq(add_res), rs.res_mult.eq(d["res_mult"]), rs.res_shift.eq(d["res_shift"]),
                     rs.i.payload.idx.eq(push_idx), res_rd.addr.eq(rs.res_addr), res_rd.en.eq(rs.res_en),
                     rs.res.eq(res_rd.data)]
        m.d.comb += [rs.i.valid.eq(drain_left != 0), rs.i.payload.acc.eq(drain[0]), rs.i.payload.ch.eq(drain_ch),
                     rs.beta.eq(beta_cur), rs.use_beta.eq(use_beta), rs.relu.eq(relu),
                     rs.relu_floor.eq(d["relu_floor"]), rs.c_base.eq(d["c_base"]),
                     chan_rd.addr.eq(rs.param_addr), chan_rd.en.eq(rs.param_en), rs.param.eq(chan_rd.data),
                     rs.o.ready.eq(1)]
        with m.If(capture):
            m.d.sync += [drain.eq(array.o.payload), drain_ch.eq(cap_o0)]
            with m.If(cap_ot == n_ot - 1):
                m.d.sync += [drain_left.eq(v_last), cap_ot.eq(0), cap_o0.eq(0)]
            with m.Else():
                m.d.sync += [drain_left.eq(C), cap_ot.eq(cap_ot + 1), cap_o0.eq(cap_o0 + C)]
        with m.Elif(push):
            m.d.sync += [drain[c].eq(drain[c + 1]) for c in range(C - 1)]
            m.d.sync += [drain_left.eq(drain_left - 1), drain_ch.eq(drain_ch + 1)]

        # --- rescaled values: to the value buffer (pixel * n_out + o), or RESULT for the final layer
        rs_in_flight = Signal(range(RESCALE_LATENCY + 2))
        pop = rs.o.valid
        with m.If(push & ~pop):
            m.d.sync += rs_in_flight.eq(rs_in_flight + 1)
        with m.Elif(pop & ~push):
            m.d.sync += rs_in_flight.eq(rs_in_flight - 1)
        v_idx = Signal(DESC_BITS)
        with m.If(pop):
            m.d.sync += v_idx.eq(v_idx + 1)
        m.d.comb += [value_wr.addr.eq(v_idx), value_wr.data.eq(rs.o.payload), value_wr.en.eq(pop & ~final),
                     result_wr.addr.eq(v_idx), result_wr.data.eq(rs.o.payload), result_wr.en.eq(pop & final)]

        # --- the pooling walk over the value buffer (channel-outer) -----------------------
        walking = Signal()
        sum_pass = Signal()                          # 1: channel sums for ASQ, 0: quantize
        wc, wc_word, wc_bank = Signal(DESC_BITS), Signal(DESC_BITS), Signal(range(R))
        wpix, wpx = Signal(DESC_BITS), Signal(DESC_BITS)
        wy0, wx0 = Signal(signed(DESC_BITS + 2)), Signal(signed(DESC_BITS + 2))
        wy, wx = Signal(signed(DESC_BITS + 2)), Signal(signed(DESC_BITS + 2))
        ky2, kx2 = Signal(DESC_BITS), Signal(DESC_BITS)
        pk, ps, pp = d["pk"], d["ps"], d["pp"]
        w_valid = Signal()
        m.d.comb += w_valid.eq((wy >= 0) & (wy < d["conv_h"]) & (wx >= 0) & (wx < out_w))
        v_addr = Signal(2 * DESC_BITS + 2)
        m.d.comb += v_addr.eq((wy[:DESC_BITS] * out_w + wx[:DESC_BITS]) * n_out + wc)
        m.d.comb += [value_rd.addr.eq(v_addr), value_rd.en.eq(walking)]
        # stage 1: the value read
        t1_v, t1_tap, t1_first, t1_last, t1_end_ch, t1_first_pix = (Signal(name=f"t1_{n}") for n in
                                                                     ("v", "tap", "first", "last", "end_ch", "first_pix"))
        t1_c, t1_cword, t1_cbank, t1_pix = Signal(DESC_BITS), Signal(DESC_BITS), Signal(range(R)), Signal(DESC_BITS)
        m.d.sync += [t1_v.eq(walking), t1_tap.eq(w_valid), t1_first.eq((ky2 == 0) & (kx2 == 0)),
                     t1_last.eq((ky2 == pk - 1) & (kx2 == pk - 1)),
                     t1_end_ch.eq((ky2 == pk - 1) & (kx2 == pk - 1) & (wpix == d["p_npix"] - 1)),
                     t1_first_pix.eq(wpix == 0), t1_c.eq(wc), t1_cword.eq(wc_word), t1_cbank.eq(wc_bank),
                     t1_pix.eq(wpix)]
        pool_max = Signal(signed(VB))
        cand = Signal(signed(VB))
        cur = Signal(signed(VB))
        # max pooling: padded taps never win; sum pooling: they add 0
        m.d.comb += cand.eq(Mux(t1_tap, value_rd.data, Mux(pool_sum, 0, -(1 << (VB - 1)))))
        with m.If(t1_first):
            m.d.comb += cur.eq(cand)
        with m.Elif(pool_sum):
            m.d.comb += cur.eq(pool_max + cand)
        with m.Else():
            m.d.comb += cur.eq(Mux(cand > pool_max, cand, pool_max))
        with m.If(t1_v):
            m.d.sync += pool_max.eq(cur)
        # ASQ prescale (PRESCALE; multiplier in q_mult_lo, shift 1..63 in q_mult_hi): the value the channel
        # sums and the quantizer see is round_half_up(cur * pre_mult / 2**pre_shift), the rounding add folded
        # into the shift as in ActQuantizer; registered in stage 2 next to the pooled value itself
        pre_p = Signal(signed(VB + DESC_BITS + 1))
        pre_r = Signal(signed(VB + DESC_BITS + 1))
        m.d.comb += [pre_p.eq(cur * d["q_mult_lo"]), pre_r.eq(((pre_p >> (d["q_mult_hi"] - 1)[:6]) + 1) >> 1)]
        # stage 2: one pooled value (t2_val: the residual save) and what the ASQ sums / the quantizer take (t2_q)
        t2_v, t2_end_ch, t2_first_pix = Signal(), Signal(), Signal()
        t2_val = Signal(signed(VB))
        t2_q = Signal(signed(VB))
        t2_c, t2_cword, t2_cbank, t2_pix = Signal(DESC_BITS), Signal(DESC_BITS), Signal(range(R)), Signal(DESC_BITS)
        m.d.sync += [t2_v.eq(t1_v & t1_last), t2_val.eq(cur), t2_q.eq(Mux(prescale, pre_r, cur)),
                     t2_end_ch.eq(t1_end_ch), t2_first_pix.eq(t1_first_pix),
                     t2_c.eq(t1_c), t2_cword.eq(t1_cword), t2_cbank.eq(t1_cbank), t2_pix.eq(t1_pix)]
        # sum pass: per-channel sums of the (prescaled) pooled values
        ssum = Signal(signed(arith.SUM_BITS))
        new_sum = Signal(signed(arith.SUM_BITS))
        m.d.comb += new_sum.eq(Mux(t2_first_pix, 0, ssum) + t2_q)
        with m.If(t2_v & sum_pass):
            m.d.sync += ssum.eq(new_sum)
        # quantize pass: codes to the activation banks (HWC, pooled pixel t2_pix)
        out_addr = Signal(DESC_BITS)
        m.d.comb += out_addr.eq(d["out_base"] + t2_pix * oct_ + t2_cword)
        m.d.comb += [qz.i.valid.eq(t2_v & ~sum_pass), qz.i.payload.v.eq(t2_q),
                     qz.i.payload.tag.eq(Cat(out_addr, t2_cbank)), qz.o.ready.eq(1),
                     qz.inv.eq(inv_cur), qz.shift.eq(d["q_shift"]), qz.lo.eq(d["lo"]), qz.hi.eq(d["hi"])]
        q_addr = qz.o.payload.tag[:DESC_BITS]
        q_bank = qz.o.payload.tag[DESC_BITS:]

        # --- the ASQ adapter: h = b1 + sum w1*S, z += w2*relu(h), z += b2; one term a cycle
        aj, ac = Signal(DESC_BITS), Signal(DESC_BITS)
        a_ptr = Signal(DESC_BITS)
        k_b1, k_w1, k_w2, k_b2 = Signal(), Signal(), Signal(), Signal()
        h = Signal(signed(arith.ADAPTER_ACC_BITS))
        z = Signal(signed(arith.ADAPTER_ACC_BITS))
        m.d.sync += [k_b1.eq(0), k_w1.eq(0), k_w2.eq(0), k_b2.eq(0)]
        a_word = adapt_rd.data
        a_weight = a_word[:arith.ADAPTER_WEIGHT_BITS].as_signed()
        h_act = Signal(signed(arith.ADAPTER_ACC_BITS))
        m.d.comb += h_act.eq(Mux(adapter_relu & (h < 0), 0, h))
        with m.If(k_b1):
            m.d.sync += h.eq(a_word)
        with m.If(k_w1):
            m.d.sync += h.eq(h + a_weight * sums_rd.data)
        with m.If(k_w2):
            m.d.sync += z.eq(z + a_weight * h_act)
        with m.If(k_b2):
            m.d.sync += z.eq(z + a_word)
        m.d.comb += [adapt_rd.addr.eq(a_ptr), sums_rd.addr.eq(ac - 1)]
        # z on the table grid: round_half_up(z / 2**z_shift), clipped, as a table index
        zs = d["z_shift"]
        zt = Signal(signed(arith.ADAPTER_ACC_BITS))
        m.d.comb += zt.eq(Mux(zs == 0, z, ((z >> (zs - 1)[:6]) + 1) >> 1))
        half = TABLE_ENTRIES // 2
        z_idx = Signal(range(TABLE_ENTRIES))
        with m.If(zt < -half):
            m.d.comb += z_idx.eq(0)
        with m.Elif(zt > half - 1):
            m.d.comb += z_idx.eq(TABLE_ENTRIES - 1)
        with m.Else():
            m.d.comb += z_idx.eq(zt + half)
        m.d.comb += table_rd.addr.eq(z_idx)

        # activation ports: host while idle; the feed reads and the quantizer writes while busy
        feed_en = Signal()
        for r in range(R):
            with m.If(busy):
                m.d.comb += [act_rd[r].addr.eq(tap_addr), act_rd[r].en.eq(feed_en),
                             act_wr[r].addr.eq(q_addr), act_wr[r].data.eq(qz.o.payload.code[:A]),
                             act_wr[r].en.eq(qz.o.valid & (q_bank == r))]
            with m.Else():
                m.d.comb += [act_rd[r].addr.eq(rd_word), act_rd[r].en.eq(do_rd & (req.sel == Sel.ACT)),
                             act_wr[r].addr.eq(wr_word), act_wr[r].data.eq(wr.data[:A]),
                             act_wr[r].en.eq(do_wr & (wr.sel == Sel.ACT) & (wr_bank == r)
                                             & (wr_word < p.act_words))]
        m.d.comb += [weight_wr.addr.eq(wr.addr), weight_wr.data.eq(wr.data[:p.weight_word_bits]),
                     weight_wr.en.eq(do_wr & (wr.sel == Sel.WEIGHT) & (wr.addr < p.weight_words))]
        m.d.comb += [chan_wr.addr.eq(wr.addr), chan_wr.data.eq(wr.data[:CHAN_BITS]),
                     chan_wr.en.eq(do_wr & (wr.sel == Sel.CHAN) & (wr.addr < p.chan_words))]
        m.d.comb += [adapt_wr.addr.eq(wr.addr), adapt_wr.data.eq(wr.data[:arith.ADAPTER_ACC_BITS]),
                     adapt_wr.en.eq(do_wr & (wr.sel == Sel.ADAPT) & (wr.addr < p.adapter_words))]
        m.d.comb += [table_wr.addr.eq(wr.addr), table_wr.data.eq(wr.data[:2 * tb]),
                     table_wr.en.eq(do_wr & (wr.sel == Sel.TABLE) & (wr.addr < TABLE_ENTRIES))]
        m.d.comb += [desc_wr.addr.eq(wr.addr), desc_wr.data.eq(wr.data[:DESC_BITS]),
                     desc_wr.en.eq(do_wr & (wr.sel == Sel.DESC) & (desc_field < DESC_FIELDS)
                                   & (desc_layer < p.max_layers))]
        m.d.comb += [sums_wr.addr.eq(t2_c), sums_wr.data.eq(new_sum), sums_wr.en.eq(t2_v & sum_pass & t2_end_ch)]
        # the pooled values a later layer adds as its residual (element pooled_pixel * n_out + o), never prescaled
        m.d.comb += [res_wr.addr.eq(t2_pix * n_out + t2_c), res_wr.data.eq(t2_val),
                     res_wr.en.eq(t2_v & ~sum_pass & save_res)]
        with m.If(do_wr & (wr.sel == Sel.CTRL) & (wr.addr == Ctrl.N_LAYERS)):
            with m.If(wr.data > p.max_layers):
                m.d.sync += n_layers.eq(p.max_layers)
            with m.Else():
                m.d.sync += n_layers.eq(wr.data)
        with m.If(do_wr & (wr.sel == Sel.CTRL) & (wr.addr == Ctrl.BETA)):
            m.d.sync += beta_in.eq(wr.data[:tb])
        with m.If(do_wr & (wr.sel == Sel.CTRL) & (wr.addr == Ctrl.FIRST_LAYER)):
            with m.If(wr.data > p.max_layers):
                m.d.sync += first_layer.eq(p.max_layers)
            with m.Else():
                m.d.sync += first_layer.eq(wr.data)
        # SRC is latched one cycle before the descriptor's last field; its factor is read while the
        # layer runs (the address stays put, and a layer only writes its own entry, never its source's)
        src = d["src"]
        m.d.comb += [betas_rd.addr.eq(src - 1), beta_cur.eq(Mux(src == 0, beta_in, betas_rd.data))]

        # --- the sequencer ------------------------------------------------------------
        mac_empty = (~feed_v & (tiles_in_flight == 0) & (drain_left == 0)
                     & ((rs_in_flight == 0) | ((rs_in_flight == 1) & pop)))
        with m.If(busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        flush = Signal(range(WALK_FLUSH + 1))

        def start_walk(sums: bool):
            return [walking.eq(1), sum_pass.eq(sums), wc.eq(0), wc_word.eq(0), wc_bank.eq(0), wpix.eq(0),
                    wpx.eq(0), wy0.eq(-pp), wx0.eq(-pp), wy.eq(-pp), wx.eq(-pp), ky2.eq(0), kx2.eq(0),
                    state.eq(_State.WALK)]

        # explicit state register decoded with an if/elif chain (no partial Verilog case
        # statements); any unused encoding behaves as TABLE
        state = Signal(_State)
        with m.If(state == _State.IDLE):
            with m.If(self.start):
                m.d.sync += [busy.eq(1), self.done.eq(0), self.cycles.eq(0), layer.eq(first_layer),
                             state.eq(_State.LAYER)]
        with m.Elif(state == _State.LAYER):
            with m.If(layer >= n_layers):
                m.d.sync += [busy.eq(0), self.done.eq(1), state.eq(_State.IDLE)]
            with m.Else():
                m.d.sync += [fcnt.eq(0), state.eq(_State.DESC)]
        with m.Elif(state == _State.DESC):
            # cycle f reads field f and latches field f - 1 (read latency 1)
            m.d.sync += fcnt.eq(fcnt + 1)
            for f, reg in fields.items():
                with m.If(fcnt == f + 1):
                    m.d.sync += reg.eq(desc_rd.data)
            with m.If(fcnt == DESC_FIELDS):
                m.d.sync += [ot.eq(0), it.eq(0), w_addr.eq(d["w_base"]), cap_ot.eq(0), cap_o0.eq(0), v_idx.eq(0),
                             push_idx.eq(0),
                             pix.eq(0), ox.eq(0), pix_addr.eq(d["pix0"]), iy0.eq(-pad), ix0.eq(-pad),
                             tap_addr.eq(d["pix0"]), ot_addr.eq(d["pix0"]), iy.eq(-pad), ix.eq(-pad), kx.eq(0),
                             ctc.eq(0),
                             state.eq(_State.FEED)]
        with m.Elif(state == _State.FEED):
            m.d.sync += it.eq(it + 1)
            with m.If(it < n_it):
                m.d.comb += feed_en.eq(1)
                m.d.sync += [feed_v.eq(1), feed_first.eq(it == 0), feed_last.eq(it == n_it - 1),
                             feed_pad.eq(~tap_valid), w_addr.eq(w_addr + 1)]
                # next tap: channel tiles fastest, then kernel columns, then kernel rows
                with m.If(ctc == ct - 1):
                    m.d.sync += ctc.eq(0)
                    with m.If(kx == k - 1):
                        m.d.sync += [kx.eq(0), ix.eq(ix0), iy.eq(iy + 1),
                                     tap_addr.eq(tap_addr + d["krow_jump"])]
                    with m.Else():
                        m.d.sync += [kx.eq(kx + 1), ix.eq(ix + 1), tap_addr.eq(tap_addr + d["kx_jump"])]
                with m.Else():
                    m.d.sync += [ctc.eq(ctc + 1), tap_addr.eq(tap_addr + 1)]
            # the tile's last cycle (the run's last tile ends with its last step: no idle cycles)
            with m.If((it == n_span - 1) | ((it == n_it - 1) & (ot == n_ot - 1) & (pix == n_pix - 1))):
                m.d.sync += [it.eq(0), kx.eq(0), ctc.eq(0)]
                with m.If(ot == n_ot - 1):
                    m.d.sync += ot.eq(0)
                    with m.If(pix == n_pix - 1):
                        m.d.sync += state.eq(_State.TAIL)
                    with m.Else():                   # next output pixel: weights again
                        m.d.sync += [pix.eq(pix + 1), w_addr.eq(d["w_base"])]
                        with m.If(ox == out_w - 1):
                            m.d.sync += [ox.eq(0), pix_addr.eq(pix_addr + d["row_step"]), iy0.eq(iy0 + stride),
                                         ix0.eq(-pad), tap_addr.eq(pix_addr + d["row_step"]),
                                         ot_addr.eq(pix_addr + d["row_step"]), iy.eq(iy0 + stride), ix.eq(-pad)]
                        with m.Else():
                            m.d.sync += [ox.eq(ox + 1), pix_addr.eq(pix_addr + d["col_step"]),
                                         ix0.eq(ix0 + stride), tap_addr.eq(pix_addr + d["col_step"]),
                                         ot_addr.eq(pix_addr + d["col_step"]), iy.eq(iy0), ix.eq(ix0 + stride)]
                with m.Else():                       # next output tile (depthwise: its own channel tiles)
                    m.d.sync += [ot.eq(ot + 1), tap_addr.eq(ot_addr + d["ot_step"]),
                                 ot_addr.eq(ot_addr + d["ot_step"]), iy.eq(iy0), ix.eq(ix0)]
        with m.Elif(state == _State.TAIL):
            with m.If(mac_empty):
                with m.If(final):
                    m.d.sync += [layer.eq(layer + 1), state.eq(_State.LAYER)]
                with m.Elif(asq):
                    m.d.sync += start_walk(True)
                with m.Else():
                    m.d.sync += start_walk(False)
                    m.d.sync += inv_cur.eq(Cat(d["q_mult_lo"], d["q_mult_hi"]))
        with m.Elif(state == _State.WALK):
            # next tap: window columns, window rows, pooled pixels (row-major), channels
            with m.If(kx2 == pk - 1):
                m.d.sync += [kx2.eq(0), wx.eq(wx0)]
                with m.If(ky2 == pk - 1):
                    m.d.sync += ky2.eq(0)
                    with m.If(wpix == d["p_npix"] - 1):
                        m.d.sync += [wpix.eq(0), wpx.eq(0), wy0.eq(-pp), wx0.eq(-pp), wy.eq(-pp), wx.eq(-pp),
                                     wc.eq(wc + 1)]
                        with m.If(wc_bank == R - 1):
                            m.d.sync += [wc_bank.eq(0), wc_word.eq(wc_word + 1)]
                        with m.Else():
                            m.d.sync += wc_bank.eq(wc_bank + 1)
                        with m.If(wc == n_out - 1):
                            m.d.sync += [walking.eq(0), flush.eq(0), state.eq(_State.FLUSH)]
                    with m.Elif(wpx == d["p_w"] - 1):
                        m.d.sync += [wpix.eq(wpix + 1), wpx.eq(0), wx0.eq(-pp), wx.eq(-pp), wy0.eq(wy0 + ps),
                                     wy.eq(wy0 + ps)]
                    with m.Else():
                        m.d.sync += [wpix.eq(wpix + 1), wpx.eq(wpx + 1), wx0.eq(wx0 + ps), wx.eq(wx0 + ps),
                                     wy.eq(wy0)]
                with m.Else():
                    m.d.sync += [ky2.eq(ky2 + 1), wy.eq(wy + 1)]
            with m.Else():
                m.d.sync += [kx2.eq(kx2 + 1), wx.eq(wx + 1)]
        with m.Elif(state == _State.FLUSH):
            m.d.sync += flush.eq(flush + 1)
            with m.If(flush == WALK_FLUSH - 1):
                with m.If(sum_pass):
                    m.d.sync += [aj.eq(0), ac.eq(0), a_ptr.eq(d["a_base"]), z.eq(0), state.eq(_State.ADAPT)]
                with m.Else():
                    m.d.sync += [layer.eq(layer + 1), state.eq(_State.LAYER)]
        with m.Elif(state == _State.ADAPT):
            m.d.sync += a_ptr.eq(a_ptr + 1)
            with m.If(aj == d["hid"]):
                m.d.sync += [k_b2.eq(1), flush.eq(0), state.eq(_State.TABLE)]
            with m.Elif(ac == 0):
                m.d.sync += [k_b1.eq(1), ac.eq(1)]
            with m.Elif(ac == n_out + 1):
                m.d.sync += [k_w2.eq(1), ac.eq(0), aj.eq(aj + 1)]
            with m.Else():
                m.d.sync += [k_w1.eq(1), ac.eq(ac + 1)]
        with m.Else():                              # _State.TABLE: z final, index, table read
            m.d.sync += flush.eq(flush + 1)
            with m.If(flush == ADAPT_TAIL - 1):
                m.d.sync += inv_cur.eq(table_rd.data[tb:])
                m.d.comb += [betas_wr.addr.eq(layer), betas_wr.data.eq(table_rd.data[:tb]), betas_wr.en.eq(1)]
                m.d.sync += start_walk(False)
        return m
