"""The ASQ unit: per-channel sums of a layer's pooled values, the adapter ``z = f(sums)``, the factor
tables ``beta(z)``/``1/beta(z)`` and the per-layer factor memory (``docs/engine.md``, "Dataflow")."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from golden import arith
from hw.pool import pooled_layout
from hw.program import DESC_BITS, EngineParams, require_engine_params
from hw.sequencer import desc_layout

__all__ = ["AsqUnit", "TABLE_ENTRIES"]

#: Entries of the ASQ factor tables (``golden.arith.asq_table_index_count``).
TABLE_ENTRIES = arith.asq_table_index_count()


class AsqUnit(wiring.Component):
    """Channel sums -> adapter -> factor tables; the factors of the current layer.

    * **Sums.** Pooled values on ``sums`` (one a cycle, channel-outer, ``first_pix`` on a channel's
      first pooled pixel, ``end_ch`` on its last) are added per channel into the sums memory
      (``SUM_BITS`` signed) at entry ``ch``.
    * **Adapter** (``adapt_start`` then ``adapting``, one term a cycle, words from the ADAPT memory
      at ``A_BASE``: per hidden unit ``j`` the bias ``b1[j]``, the ``N_OUT`` weights ``w1[j, :]`` and
      ``w2[j]``, then ``b2``): ``h = b1[j] + sum_c w1[j, c] * S[c]``, ``z += w2[j] * h`` (``h`` through
      a ReLU with ``ADAPTER_RELU``), ``z += b2``; :func:`golden.arith.adapter_z`. ``adapt_end`` rises in
      the cycle after the ``HID * (N_OUT + 2)``-th adapter cycle, i.e. the adapter takes
      ``HID * (N_OUT + 2) + 1`` cycles.
    * **Tables.** ``z`` goes on the table grid, ``round_half_up(z / 2**Z_SHIFT)`` clipped to the table
      (:func:`golden.arith.asq_z_index`), and the table entry ``beta | inv_beta << ASQ_TABLE_BITS`` is
      read; it is final ``ADAPT_TAIL`` cycles after ``adapt_end``. ``table_commit`` stores ``beta`` as
      the factor of layer ``layer`` and makes ``inv_beta`` the quantizer multiplier ``inv``.

    ``beta`` is the factor of the current layer's input codes: ``beta_in`` (host) when ``SRC`` is 0,
    else the factor stored for layer ``SRC - 1`` (the address is set by ``SRC``, so ``beta`` is valid
    from the second cycle after the descriptor's ``SRC`` field is latched). ``quant_from_desc``
    loads ``inv`` with ``Q_MULT_LO | Q_MULT_HI << 16`` instead (non-ASQ quantizers).

    Parameters
    ----------
    params : EngineParams
        ``max_layers``, ``max_channels``, ``adapter_words``, host widths.

    Attributes
    ----------
    desc : In(desc_layout())
        ``SRC``, ``A_BASE``, ``HID``, ``N_OUT``, ``Z_SHIFT``, ``FLAGS`` (``ADAPTER_RELU``),
        ``Q_MULT_LO``/``HI``.
    layer : In(range(max_layers + 1))
        The current layer (where ``table_commit`` stores its factor).
    beta_in : In(ASQ_TABLE_BITS)
        The network input's factor (host ``CTRL`` 1).
    sums : In(stream.Signature(pooled_layout(value_bits)))
        Pooled values of the summing walk (always ready).
    adapt_start, adapting : In(1)
        Pulse (reset the adapter, ``z = 0``) / level (one adapter term a cycle).
    adapt_end : Out(1)
        The adapter's last cycle (combinational, while ``adapting``).
    table_commit, quant_from_desc : In(1)
        Pulses, see above.
    wr_addr : In(addr_bits), wr_data : In(data_bits)
    adapt_we, table_we : In(1)
        Host writes of the ADAPT (``ADAPTER_ACC_BITS`` signed) and TABLE memories; the host port
        checks the addresses.
    beta : Out(ASQ_TABLE_BITS)
        Factor of the current layer's input codes (combinational from a memory read).
    inv : Out(ASQ_TABLE_BITS)
        Quantizer multiplier of the current layer (register).
    """

    def __init__(self, params: EngineParams):
        require_engine_params(self, params)
        self.params = p = params
        tb = arith.ASQ_TABLE_BITS
        super().__init__({
            "desc": In(desc_layout()), "layer": In(range(p.max_layers + 1)), "beta_in": In(tb),
            "sums": In(stream.Signature(pooled_layout(p.value_bits))),
            "adapt_start": In(1), "adapting": In(1), "adapt_end": Out(1),
            "table_commit": In(1), "quant_from_desc": In(1),
            "wr_addr": In(p.addr_bits), "wr_data": In(p.data_bits), "adapt_we": In(1), "table_we": In(1),
            "beta": Out(tb), "inv": Out(tb),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        d = self.desc
        tb = arith.ASQ_TABLE_BITS
        m.submodules.sums_mem = sums_mem = memory.Memory(shape=signed(arith.SUM_BITS), depth=p.max_channels,
                                                         init=[])
        sums_wr, sums_rd = sums_mem.write_port(), sums_mem.read_port()
        m.submodules.adapt_mem = adapt_mem = memory.Memory(shape=signed(arith.ADAPTER_ACC_BITS),
                                                           depth=p.adapter_words, init=[])
        adapt_wr, adapt_rd = adapt_mem.write_port(), adapt_mem.read_port()
        m.submodules.table_mem = table_mem = memory.Memory(shape=unsigned(2 * tb), depth=TABLE_ENTRIES, init=[])
        table_wr, table_rd = table_mem.write_port(), table_mem.read_port()
        # the factor each ASQ layer chose, kept per layer: a layer reads its source layer's (SRC)
        m.submodules.betas_mem = betas_mem = memory.Memory(shape=unsigned(tb), depth=p.max_layers, init=[])
        betas_wr, betas_rd = betas_mem.write_port(), betas_mem.read_port()
        m.d.comb += [adapt_wr.addr.eq(self.wr_addr), adapt_wr.data.eq(self.wr_data[:arith.ADAPTER_ACC_BITS]),
                     adapt_wr.en.eq(self.adapt_we),
                     table_wr.addr.eq(self.wr_addr), table_wr.data.eq(self.wr_data[:2 * tb]),
                     table_wr.en.eq(self.table_we)]

        # channel sums of the (prescaled) pooled values
        s = self.sums.payload
        m.d.comb += self.sums.ready.eq(1)
        ssum = Signal(signed(arith.SUM_BITS))
        new_sum = Signal(signed(arith.SUM_BITS))
        m.d.comb += new_sum.eq(Mux(s.first_pix, 0, ssum) + s.value)
        with m.If(self.sums.valid):
            m.d.sync += ssum.eq(new_sum)
        m.d.comb += [sums_wr.addr.eq(s.ch), sums_wr.data.eq(new_sum), sums_wr.en.eq(self.sums.valid & s.end_ch)]

        # the adapter: h = b1 + sum w1*S, z += w2*relu(h), z += b2; one term a cycle
        aj, ac = Signal(DESC_BITS), Signal(DESC_BITS)
        a_ptr = Signal(DESC_BITS)
        k_b1, k_w1, k_w2, k_b2 = Signal(), Signal(), Signal(), Signal()
        h = Signal(signed(arith.ADAPTER_ACC_BITS))
        z = Signal(signed(arith.ADAPTER_ACC_BITS))
        m.d.sync += [k_b1.eq(0), k_w1.eq(0), k_w2.eq(0), k_b2.eq(0)]
        a_word = adapt_rd.data
        a_weight = a_word[:arith.ADAPTER_WEIGHT_BITS].as_signed()
        h_act = Signal(signed(arith.ADAPTER_ACC_BITS))
        m.d.comb += h_act.eq(Mux(d.flags[4] & (h < 0), 0, h))
        with m.If(k_b1):
            m.d.sync += h.eq(a_word)
        with m.If(k_w1):
            m.d.sync += h.eq(h + a_weight * sums_rd.data)
        with m.If(k_w2):
            m.d.sync += z.eq(z + a_weight * h_act)
        with m.If(k_b2):
            m.d.sync += z.eq(z + a_word)
        m.d.comb += [adapt_rd.addr.eq(a_ptr), sums_rd.addr.eq(ac - 1)]
        m.d.comb += self.adapt_end.eq(self.adapting & (aj == d.hid))
        with m.If(self.adapt_start):
            m.d.sync += [aj.eq(0), ac.eq(0), a_ptr.eq(d.a_base), z.eq(0)]
        with m.Elif(self.adapting):
            m.d.sync += a_ptr.eq(a_ptr + 1)
            with m.If(aj == d.hid):
                m.d.sync += k_b2.eq(1)
            with m.Elif(ac == 0):
                m.d.sync += [k_b1.eq(1), ac.eq(1)]
            with m.Elif(ac == d.n_out + 1):
                m.d.sync += [k_w2.eq(1), ac.eq(0), aj.eq(aj + 1)]
            with m.Else():
                m.d.sync += [k_w1.eq(1), ac.eq(ac + 1)]

        # z on the table grid: round_half_up(z / 2**z_shift), clipped, as a table index
        zs = d.z_shift
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

        # factors: of the input codes (SRC's), and the quantizer's multiplier
        src = d.src
        m.d.comb += [betas_rd.addr.eq(src - 1), self.beta.eq(Mux(src == 0, self.beta_in, betas_rd.data))]
        with m.If(self.quant_from_desc):
            m.d.sync += self.inv.eq(Cat(d.q_mult_lo, d.q_mult_hi))
        with m.If(self.table_commit):
            m.d.sync += self.inv.eq(table_rd.data[tb:])
            m.d.comb += [betas_wr.addr.eq(self.layer), betas_wr.data.eq(table_rd.data[:tb]), betas_wr.en.eq(1)]
        return m
