"""The engine's host port: decodes ``host_wr`` writes into memory write enables and the CTRL
registers, and answers ``rd_req`` reads of the activation banks and RESULT (``docs/engine.md``)."""

from __future__ import annotations

from amaranth.hdl import Array, Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden import arith
from hw.program import DESC_FIELDS, Ctrl, EngineParams, Sel, require_engine_params
from hw.rescale import factor_layout

__all__ = ["HostPort", "host_write_layout", "host_read_layout", "TABLE_ENTRIES"]

#: Entries of the ASQ factor tables (``golden.arith.asq_table_index_count``).
TABLE_ENTRIES = arith.asq_table_index_count()


def host_write_layout(params: EngineParams) -> data.StructLayout:
    """``host_wr`` payload: ``{sel: 3, addr: 16, data: data_bits}``, LSB first."""
    return data.StructLayout({"sel": unsigned(3), "addr": unsigned(params.addr_bits),
                              "data": unsigned(params.data_bits)})


def host_read_layout(params: EngineParams) -> data.StructLayout:
    """``rd_req`` payload: ``{sel: 3, addr: 16}``, LSB first."""
    return data.StructLayout({"sel": unsigned(3), "addr": unsigned(params.addr_bits)})


class HostPort(wiring.Component):
    """Host writes and reads of the engine's memories, only while the engine is idle.

    Writes (``host_wr``, one a cycle, ``ready = ~busy``) go straight to the memories: one write
    enable per memory (per bank for ACT), each only for an address inside that memory (ACT: bank
    ``addr % 2**bank_bits < R``, word ``addr >> bank_bits < act_words``; DESC: field
    ``addr % 64 < DESC_FIELDS``, slot ``addr // 64 < max_layers``); other writes are dropped. CTRL
    writes set ``n_layers`` / ``first_layer`` (clamped to ``max_layers``) and ``beta_in`` (the low
    21 bits of the data: ``{mant: 15, shift: 6}``) at the end of the cycle.

    Reads (``rd_req``): the response is valid the cycle after the request is accepted and held
    until taken; a request is accepted while idle and no response is blocked. ACT answers the
    bank's code zero-extended, RESULT the value sign-extended, anything else (or an address
    outside the memory) 0. Latency 1.

    Parameters
    ----------
    params : EngineParams
        Bank count R, memory depths, ``max_layers``, host widths.

    Attributes
    ----------
    host_wr : In(stream.Signature(host_write_layout(params)))
    rd_req : In(stream.Signature(host_read_layout(params)))
    rd_resp : Out(stream.Signature(unsigned(data_bits)))
        The engine's host ports (``hw.engine.PostEngine``).
    busy : In(1)
        The engine runs: no writes, no reads.
    wr_addr : Out(addr_bits), wr_data : Out(data_bits)
        Address and data of the write (for every memory but ACT).
    act_word : Out(addr_bits - bank_bits)
        ACT word of the write.
    act_we : Out(R)
        Per-bank ACT write enable.
    weight_we, chan_we, adapt_we, table_we, desc_we : Out(1)
        Write enables of WEIGHT, CHAN, ADAPT, TABLE and DESC.
    n_layers, first_layer : Out(range(max_layers + 1))
    beta_in : Out(hw.rescale.factor_layout())
        CTRL registers (0 after reset).
    act_raddr : Out(addr_bits - bank_bits), act_re : Out(1)
    act_rdata : In(data.ArrayLayout(unsigned(abits), R))
        Read port of every ACT bank (synchronous).
    result_raddr : Out(addr_bits), result_re : Out(1)
    result_rdata : In(signed(16))
        Read port of RESULT (synchronous).
    """

    def __init__(self, params: EngineParams):
        require_engine_params(self, params)
        self.params = p = params
        word_bits = p.addr_bits - p.bank_bits
        slots = range(p.max_layers + 1)
        super().__init__({
            "host_wr": In(stream.Signature(host_write_layout(p))),
            "rd_req": In(stream.Signature(host_read_layout(p))),
            "rd_resp": Out(stream.Signature(unsigned(p.data_bits))),
            "busy": In(1),
            "wr_addr": Out(p.addr_bits), "wr_data": Out(p.data_bits),
            "act_word": Out(word_bits), "act_we": Out(p.rows),
            "weight_we": Out(1), "chan_we": Out(1), "adapt_we": Out(1), "table_we": Out(1), "desc_we": Out(1),
            "n_layers": Out(slots), "first_layer": Out(slots), "beta_in": Out(factor_layout()),
            "act_raddr": Out(word_bits), "act_re": Out(1),
            "act_rdata": In(data.ArrayLayout(unsigned(p.abits), p.rows)),
            "result_raddr": Out(p.addr_bits), "result_re": Out(1), "result_rdata": In(signed(arith.VALUE_BITS)),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        R, bank_bits = p.rows, p.bank_bits

        # --- writes (only while idle)
        wr = self.host_wr.payload
        m.d.comb += self.host_wr.ready.eq(~self.busy)
        do_wr = self.host_wr.valid & ~self.busy
        wr_bank = wr.addr[:bank_bits]
        wr_word = wr.addr[bank_bits:]
        desc_field = wr.addr[:6]
        desc_layer = wr.addr[6:]
        m.d.comb += [self.wr_addr.eq(wr.addr), self.wr_data.eq(wr.data), self.act_word.eq(wr_word)]
        m.d.comb += [self.act_we[r].eq(do_wr & (wr.sel == Sel.ACT) & (wr_bank == r) & (wr_word < p.act_words))
                     for r in range(R)]
        m.d.comb += [self.weight_we.eq(do_wr & (wr.sel == Sel.WEIGHT) & (wr.addr < p.weight_words)),
                     self.chan_we.eq(do_wr & (wr.sel == Sel.CHAN) & (wr.addr < p.chan_words)),
                     self.adapt_we.eq(do_wr & (wr.sel == Sel.ADAPT) & (wr.addr < p.adapter_words)),
                     self.table_we.eq(do_wr & (wr.sel == Sel.TABLE) & (wr.addr < TABLE_ENTRIES)),
                     self.desc_we.eq(do_wr & (wr.sel == Sel.DESC) & (desc_field < DESC_FIELDS)
                                     & (desc_layer < p.max_layers))]
        ctrl = do_wr & (wr.sel == Sel.CTRL)
        with m.If(ctrl & (wr.addr == Ctrl.N_LAYERS)):
            with m.If(wr.data > p.max_layers):
                m.d.sync += self.n_layers.eq(p.max_layers)
            with m.Else():
                m.d.sync += self.n_layers.eq(wr.data)
        with m.If(ctrl & (wr.addr == Ctrl.BETA)):
            m.d.sync += self.beta_in.eq(wr.data[:arith.FACTOR_BITS])
        with m.If(ctrl & (wr.addr == Ctrl.FIRST_LAYER)):
            with m.If(wr.data > p.max_layers):
                m.d.sync += self.first_layer.eq(p.max_layers)
            with m.Else():
                m.d.sync += self.first_layer.eq(wr.data)

        # --- reads (only while idle)
        req = self.rd_req.payload
        resp_valid = self.rd_resp.valid
        m.d.comb += self.rd_req.ready.eq(~self.busy & (~resp_valid | self.rd_resp.ready))
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
        act_data = Array(self.act_rdata[r] for r in range(R))
        with m.If(resp_ok & (resp_sel == Sel.ACT)):
            m.d.comb += self.rd_resp.payload.eq(act_data[resp_bank])        # zero-extended
        with m.Elif(resp_ok & (resp_sel == Sel.RESULT)):
            m.d.comb += self.rd_resp.payload.eq(self.result_rdata)          # sign-extended
        m.d.comb += [self.act_raddr.eq(rd_word), self.act_re.eq(do_rd & (req.sel == Sel.ACT)),
                     self.result_raddr.eq(req.addr), self.result_re.eq(do_rd & (req.sel == Sel.RESULT))]
        return m
