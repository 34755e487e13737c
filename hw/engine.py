"""The layer engine: memories, host ports, sequencer, POST MAC array and requantiser.

Ports and memory map are those of ``docs/engine.md``; the schedule below is what ``cycles``
counts and what :func:`hw.program.predicted_cycles` computes.

Schedule
--------
A run starts in the cycle after ``start`` is seen; ``cycles`` counts every cycle from then until,
and including, the cycle at whose end ``done`` rises. Per layer: ``LAYER`` 1 cycle, ``DESC``
``25 + 1`` cycles (one descriptor field a cycle, plus the cycle that latches the last), then for
every output pixel and output tile ``BIAS`` ``C`` cycles and ``FEED`` ``n_it`` cycles (one weight
word and one R-wide input word a cycle, the array step a cycle later; the finished tile drains
while the next one runs), then ``TAIL`` ``6 + v_last`` cycles; once per run a final ``LAYER``
cycle raises ``done``:

``cycles = 1 + sum_l [27 + n_pix*n_ot*(C + n_it) + 6 + v_last]`` exactly, independent of the data
(:data:`hw.program.LAYER_OVERHEAD`, :data:`hw.program.TAIL_CYCLES`, :data:`hw.program.RUN_OVERHEAD`).

Dataflow
--------
Activation banks: R memories of ``act_words`` x ``abits``; element ``(c, y, x)`` of a ``C x H x W``
region at word ``b`` is in bank ``c % R`` at word ``b + (y*W + x)*ceil(C/R) + c // R`` (HWC). The
sequencer walks output pixels row by row and, for each, the taps ``(ky, kx)`` of its receptive
field and the ``CT`` channel tiles of each tap with incremental address registers (``pix0``,
``col_step``, ``row_step``, ``krow_jump`` from the descriptor: no multiplier); taps outside the
input feed zeros. Weight memory: one ``R*C*W``-bit word per tile, tiles ``(ot, it)`` consecutive
from ``w_base`` and read again for every pixel. Bias memory: ``acc_bits`` per entry, ``C`` per
output tile. Outputs of the final layer go to the result memory at ``pixel*n_out + o``; other
layers' outputs go through the requantiser to word ``out_base + pixel*oct + o // R``, bank
``o % R``. Descriptors: a 16-bit memory at ``layer * 32 + field``.

Host notes
----------
Writes to addresses outside a memory (or to a bank ``>= R``, a descriptor field ``>= 25``) are
ignored; such reads answer 0. ``n_layers`` above ``max_layers`` is clamped to it. The engine reads
``C`` biases per output tile, so a layer needs ``n_ot * C`` bias entries (zeros past ``n_out``;
:func:`hw.program.build_program` pads). Take every read response before ``start``: during a run
the activation read ports belong to the sequencer.

By construction the array's output is always taken the cycle it is offered and the
requantiser is never blocked, so the sequencer streams without stalls and the schedule above is
exact; the streams keep valid/ready so the components stay reusable.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.array import PostArray
from hw.lut import checked
from hw.program import DESC_BITS, DESC_FIELDS, DESC_STRIDE, DescField, EngineParams, Sel
from hw.rescale import SHIFT_BITS, QMAX_BITS, Requantizer

__all__ = ["PostEngine", "host_write_layout", "host_read_layout"]


class _State(enum.Enum, shape=3):
    """Sequencer states (see the module docstring's "Schedule")."""

    IDLE = 0
    LAYER = 1
    DESC = 2
    BIAS = 3
    FEED = 4
    TAIL = 5


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
        One-cycle pulse while idle: run ``n_layers`` layers.
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

        # --- memories ---------------------------------------------------------------
        act_mem = [memory.Memory(shape=unsigned(A), depth=p.act_words, init=[]) for _ in range(R)]
        for r, mem in enumerate(act_mem):
            m.submodules[f"act{r}"] = mem
        act_wr = [mem.write_port() for mem in act_mem]
        act_rd = [mem.read_port() for mem in act_mem]
        m.submodules.weight = weight_mem = memory.Memory(shape=unsigned(p.weight_word_bits),
                                                         depth=p.weight_words, init=[])
        weight_wr, weight_rd = weight_mem.write_port(), weight_mem.read_port()
        m.submodules.bias = bias_mem = memory.Memory(shape=unsigned(p.acc_bits), depth=p.bias_words, init=[])
        bias_wr, bias_rd = bias_mem.write_port(), bias_mem.read_port()
        m.submodules.result = result_mem = memory.Memory(shape=unsigned(p.acc_bits), depth=p.result_words,
                                                         init=[])
        result_wr, result_rd = result_mem.write_port(), result_mem.read_port()
        m.submodules.desc = desc_mem = memory.Memory(shape=unsigned(DESC_BITS),
                                                     depth=p.max_layers * DESC_STRIDE, init=[])
        desc_wr, desc_rd = desc_mem.write_port(), desc_mem.read_port()

        m.submodules.array = array = PostArray(R, C, p.wbits, A, p.frac_bits, p.acc_bits)
        m.submodules.rq = rq = Requantizer(p.acc_bits)

        # --- control registers ------------------------------------------------------
        busy = self.busy
        n_layers = Signal(range(p.max_layers + 1))

        # --- host writes (only while idle) ------------------------------------------
        wr = self.host_wr.payload
        m.d.comb += self.host_wr.ready.eq(~busy)
        do_wr = self.host_wr.valid & ~busy
        wr_bank = wr.addr[:bank_bits]
        wr_word = wr.addr[bank_bits:]
        desc_field = wr.addr[:5]
        desc_layer = wr.addr[5:]

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
            m.d.comb += self.rd_resp.payload.eq(result_rd.data.as_signed())  # sign-extended
        m.d.comb += [result_rd.addr.eq(req.addr), result_rd.en.eq(do_rd & (req.sel == Sel.RESULT))]

        # --- descriptor of the current layer ----------------------------------------
        layer = Signal(range(p.max_layers + 1))
        n_it = Signal(DESC_BITS)
        n_ot = Signal(DESC_BITS)
        n_out = Signal(DESC_BITS)
        in_base = Signal(DESC_BITS)
        out_base = Signal(DESC_BITS)
        w_base = Signal(DESC_BITS)
        b_base = Signal(DESC_BITS)
        mult = Signal(DESC_BITS)
        shift = Signal(SHIFT_BITS)
        qmax = Signal(QMAX_BITS)
        final = Signal()
        k = Signal(DESC_BITS)
        ct = Signal(DESC_BITS)
        stride = Signal(DESC_BITS)
        pad = Signal(DESC_BITS)
        in_h = Signal(DESC_BITS)
        in_w = Signal(DESC_BITS)
        out_w = Signal(DESC_BITS)
        n_pix = Signal(DESC_BITS)
        oct_ = Signal(DESC_BITS)
        col_step = Signal(DESC_BITS)
        row_step = Signal(signed(DESC_BITS))
        krow_jump = Signal(DESC_BITS)
        v_last = Signal(DESC_BITS)
        pix0 = Signal(signed(DESC_BITS))
        fields = {DescField.N_IT: n_it, DescField.N_OT: n_ot, DescField.N_OUT: n_out,
                  DescField.IN_BASE: in_base, DescField.OUT_BASE: out_base, DescField.W_BASE: w_base,
                  DescField.B_BASE: b_base, DescField.MULT: mult, DescField.SHIFT: shift,
                  DescField.QMAX: qmax, DescField.FINAL: final, DescField.K: k, DescField.CT: ct,
                  DescField.STRIDE: stride, DescField.PAD: pad, DescField.IN_H: in_h, DescField.IN_W: in_w,
                  DescField.OUT_W: out_w, DescField.N_PIX: n_pix, DescField.OCT: oct_,
                  DescField.COL_STEP: col_step, DescField.ROW_STEP: row_step, DescField.KROW_JUMP: krow_jump,
                  DescField.V_LAST: v_last, DescField.PIX0: pix0}
        assert len(fields) == DESC_FIELDS

        # --- sequencer state ----------------------------------------------------------
        fcnt = Signal(range(DESC_FIELDS + 1))     # descriptor field being read
        ccnt = Signal(range(C))                   # bias being read in BIAS
        ot = Signal(DESC_BITS)                    # output tile
        it = Signal(DESC_BITS)                    # input tile
        w_addr = Signal(DESC_BITS)
        b_addr = Signal(DESC_BITS)
        m.d.comb += [weight_rd.addr.eq(w_addr), bias_rd.addr.eq(b_addr),
                     desc_rd.addr.eq(Cat(fcnt[:5], layer))]

        # convolution walk: output pixel (pix, ox), its receptive field's tap (row iy, column kx/ix,
        # channel tile ctc); the input word of the tap is tap_addr
        pix = Signal(DESC_BITS)
        ox = Signal(DESC_BITS)
        pix_addr = Signal(signed(DESC_BITS + 4))     # input word of tap (0, 0) of this pixel
        iy0 = Signal(signed(DESC_BITS + 2))          # input row / column of tap (0, 0)
        ix0 = Signal(signed(DESC_BITS + 2))
        tap_addr = Signal(signed(DESC_BITS + 4))
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
        bias_v = Signal()
        init = Signal(data.ArrayLayout(signed(p.acc_bits), C))
        m.d.sync += [feed_v.eq(0), bias_v.eq(0)]
        with m.If(bias_v):                                   # shift the tile's biases in
            m.d.sync += init[C - 1].eq(bias_rd.data.as_signed())
            m.d.sync += [init[c].eq(init[c + 1]) for c in range(C - 1)]
        step = array.i.payload
        m.d.comb += [array.i.valid.eq(feed_v), step.first.eq(feed_first), step.last.eq(feed_last),
                     step.init.eq(init), step.w.eq(weight_rd.data)]
        m.d.comb += [step.x[r].eq(Mux(feed_pad, 0, act_rd[r].data)) for r in range(R)]

        # activation read ports: host reads while idle, the feed while busy
        feed_en = Signal()
        for r in range(R):
            with m.If(busy):
                m.d.comb += [act_rd[r].addr.eq(tap_addr), act_rd[r].en.eq(feed_en)]
            with m.Else():
                m.d.comb += [act_rd[r].addr.eq(rd_word), act_rd[r].en.eq(do_rd & (req.sel == Sel.ACT))]

        # --- drain: the array's C accumulators, one valid output a cycle into the requantiser
        drain = Signal(data.ArrayLayout(signed(p.acc_bits), C))
        drain_left = Signal(range(C + 1))
        cap_ot = Signal(DESC_BITS)                   # output tile (within its pixel) captured next
        tiles_in_flight = Signal(2)                  # last steps accepted, outputs not yet captured
        m.d.comb += array.o.ready.eq(drain_left == 0)
        capture = array.o.valid & array.o.ready
        last_in = array.i.valid & array.i.ready & feed_last
        with m.If(last_in & ~capture):
            m.d.sync += tiles_in_flight.eq(tiles_in_flight + 1)
        with m.Elif(capture & ~last_in):
            m.d.sync += tiles_in_flight.eq(tiles_in_flight - 1)
        m.d.comb += [rq.i.valid.eq(drain_left != 0), rq.i.payload.acc.eq(drain[0]),
                     rq.i.payload.mult.eq(mult), rq.i.payload.shift.eq(shift), rq.i.payload.qmax.eq(qmax),
                     rq.i.payload.final.eq(final)]
        push = rq.i.valid & rq.i.ready
        with m.If(capture):
            m.d.sync += drain.eq(array.o.payload)
            with m.If(cap_ot == n_ot - 1):
                m.d.sync += [drain_left.eq(v_last), cap_ot.eq(0)]
            with m.Else():
                m.d.sync += [drain_left.eq(C), cap_ot.eq(cap_ot + 1)]
        with m.Elif(push):
            m.d.sync += [drain[c].eq(drain[c + 1]) for c in range(C - 1)]
            m.d.sync += drain_left.eq(drain_left - 1)

        # --- writer: requantised outputs to the activation banks, logits to RESULT ----
        m.d.comb += rq.o.ready.eq(1)
        rq_in_flight = Signal(3)
        pop = rq.o.valid
        with m.If(push & ~pop):
            m.d.sync += rq_in_flight.eq(rq_in_flight + 1)
        with m.Elif(pop & ~push):
            m.d.sync += rq_in_flight.eq(rq_in_flight - 1)
        out_word = Signal(DESC_BITS)
        out_bank = Signal(range(R))
        out_pix = Signal(DESC_BITS)                  # first word of the pixel being written
        wr_o = Signal(DESC_BITS)                     # output channel being written
        res_idx = Signal(DESC_BITS)
        with m.If(pop):
            with m.If(final):
                m.d.sync += res_idx.eq(res_idx + 1)
            with m.Elif(wr_o == n_out - 1):          # last channel of a pixel: next pixel's words
                m.d.sync += [wr_o.eq(0), out_bank.eq(0), out_pix.eq(out_pix + oct_),
                             out_word.eq(out_pix + oct_)]
            with m.Elif(out_bank == R - 1):
                m.d.sync += [out_bank.eq(0), out_word.eq(out_word + 1), wr_o.eq(wr_o + 1)]
            with m.Else():
                m.d.sync += [out_bank.eq(out_bank + 1), wr_o.eq(wr_o + 1)]

        for r in range(R):
            with m.If(busy):
                m.d.comb += [act_wr[r].addr.eq(out_word), act_wr[r].data.eq(rq.o.payload[:A]),
                             act_wr[r].en.eq(pop & ~final & (out_bank == r))]
            with m.Else():
                m.d.comb += [act_wr[r].addr.eq(wr_word), act_wr[r].data.eq(wr.data[:A]),
                             act_wr[r].en.eq(do_wr & (wr.sel == Sel.ACT) & (wr_bank == r)
                                             & (wr_word < p.act_words))]
        m.d.comb += [result_wr.addr.eq(res_idx), result_wr.data.eq(rq.o.payload),
                     result_wr.en.eq(pop & final)]
        m.d.comb += [weight_wr.addr.eq(wr.addr), weight_wr.data.eq(wr.data[:p.weight_word_bits]),
                     weight_wr.en.eq(do_wr & (wr.sel == Sel.WEIGHT) & (wr.addr < p.weight_words))]
        m.d.comb += [bias_wr.addr.eq(wr.addr), bias_wr.data.eq(wr.data[:p.acc_bits]),
                     bias_wr.en.eq(do_wr & (wr.sel == Sel.BIAS) & (wr.addr < p.bias_words))]
        m.d.comb += [desc_wr.addr.eq(wr.addr), desc_wr.data.eq(wr.data[:DESC_BITS]),
                     desc_wr.en.eq(do_wr & (wr.sel == Sel.DESC) & (desc_field < DESC_FIELDS)
                                   & (desc_layer < p.max_layers))]
        with m.If(do_wr & (wr.sel == Sel.CTRL) & (wr.addr == 0)):
            with m.If(wr.data > p.max_layers):
                m.d.sync += n_layers.eq(p.max_layers)
            with m.Else():
                m.d.sync += n_layers.eq(wr.data)

        # --- the sequencer ------------------------------------------------------------
        pipeline_empty = (~feed_v & (tiles_in_flight == 0) & (drain_left == 0)
                          & ((rq_in_flight == 0) | ((rq_in_flight == 1) & pop)))
        with m.If(busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)

        # explicit state register decoded with an if/elif chain (no partial Verilog case
        # statements); any unused encoding behaves as TAIL
        state = Signal(_State)
        with m.If(state == _State.IDLE):
            with m.If(self.start):
                m.d.sync += [busy.eq(1), self.done.eq(0), self.cycles.eq(0), layer.eq(0),
                             state.eq(_State.LAYER)]
        with m.Elif(state == _State.LAYER):
            with m.If(layer == n_layers):
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
                m.d.sync += [ot.eq(0), ccnt.eq(0), w_addr.eq(w_base), b_addr.eq(b_base), cap_ot.eq(0),
                             out_word.eq(out_base), out_pix.eq(out_base), out_bank.eq(0), wr_o.eq(0),
                             res_idx.eq(0), pix.eq(0), ox.eq(0), pix_addr.eq(pix0), iy0.eq(-pad),
                             ix0.eq(-pad), state.eq(_State.BIAS)]
        with m.Elif(state == _State.BIAS):
            m.d.sync += [bias_v.eq(1), b_addr.eq(b_addr + 1), ccnt.eq(ccnt + 1)]
            with m.If(ccnt == C - 1):
                m.d.sync += [ccnt.eq(0), it.eq(0), tap_addr.eq(pix_addr), kx.eq(0), ctc.eq(0),
                             iy.eq(iy0), ix.eq(ix0), state.eq(_State.FEED)]
        with m.Elif(state == _State.FEED):
            m.d.comb += feed_en.eq(1)
            m.d.sync += [feed_v.eq(1), feed_first.eq(it == 0), feed_last.eq(it == n_it - 1),
                         feed_pad.eq(~tap_valid), w_addr.eq(w_addr + 1), it.eq(it + 1)]
            # next tap: channel tiles fastest, then kernel columns, then kernel rows
            with m.If(ctc == ct - 1):
                m.d.sync += ctc.eq(0)
                with m.If(kx == k - 1):
                    m.d.sync += [kx.eq(0), ix.eq(ix0), iy.eq(iy + 1),
                                 tap_addr.eq(tap_addr + krow_jump)]
                with m.Else():
                    m.d.sync += [kx.eq(kx + 1), ix.eq(ix + 1), tap_addr.eq(tap_addr + 1)]
            with m.Else():
                m.d.sync += [ctc.eq(ctc + 1), tap_addr.eq(tap_addr + 1)]
            with m.If(it == n_it - 1):
                with m.If(ot == n_ot - 1):
                    m.d.sync += ot.eq(0)
                    with m.If(pix == n_pix - 1):
                        m.d.sync += state.eq(_State.TAIL)
                    with m.Else():                   # next output pixel: weights and biases again
                        m.d.sync += [pix.eq(pix + 1), w_addr.eq(w_base), b_addr.eq(b_base),
                                     state.eq(_State.BIAS)]
                        with m.If(ox == out_w - 1):
                            m.d.sync += [ox.eq(0), pix_addr.eq(pix_addr + row_step), iy0.eq(iy0 + stride),
                                         ix0.eq(-pad)]
                        with m.Else():
                            m.d.sync += [ox.eq(ox + 1), pix_addr.eq(pix_addr + col_step),
                                         ix0.eq(ix0 + stride)]
                with m.Else():
                    m.d.sync += [ot.eq(ot + 1), state.eq(_State.BIAS)]
        with m.Else():                              # _State.TAIL
            with m.If(pipeline_empty):
                m.d.sync += [layer.eq(layer + 1), state.eq(_State.LAYER)]
        return m
