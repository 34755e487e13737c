"""The ASQ unit: per-channel sums of a layer's pooled values, the adapter ``z = f(sums)``, the factor
tables ``beta(z)``/``1/beta(z)`` and the per-layer factor memory (``docs/engine.md``, "Dataflow")."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from golden import arith
from hw.pool import pooled_layout
from hw.lut import checked
from hw.program import DESC_BITS, EngineFitError, EngineParams, require_engine_params
from hw.rescale import clamp_shift, factor_layout, quant_layout, round_shift, saturate
from hw.sequencer import desc_layout

__all__ = ["AsqUnit", "TABLE_ENTRIES", "table_layout", "check_host_width", "CHANNEL_SUM_BITS"]

#: Entries of the ASQ factor tables (``golden.arith.asq_table_index_count``).
TABLE_ENTRIES = arith.asq_table_index_count()
#: Signed width of the channel-sum accumulation register: a channel has at most ``value_words <=
#: 2**16`` pooled pixels of 16 bits, so its sum never leaves 32 bits.
CHANNEL_SUM_BITS = arith.VALUE_BITS + DESC_BITS


def check_host_width(params: EngineParams) -> None:
    """The host writes a TABLE entry in one word: :class:`hw.program.EngineFitError` unless
    ``params.data_bits >= golden.arith.ASQ_TABLE_BITS``."""
    if params.data_bits < arith.ASQ_TABLE_BITS:
        raise EngineFitError(f"the host data width {params.data_bits} is narrower than a TABLE word "
                             f"({arith.ASQ_TABLE_BITS} bits): EngineParams.data_bits must cover "
                             f"golden.arith.ASQ_TABLE_BITS (or use a wider array: rows*cols*wbits >= "
                             f"{arith.ASQ_TABLE_BITS})")


def table_layout() -> data.StructLayout:
    """A TABLE entry (``golden.arith.factor_words``): ``{beta: {mant: 15, shift: 6}, inv: {mant: 15,
    shift: 6}}``, LSB first, ``golden.arith.ASQ_TABLE_BITS`` (42) bits."""
    return data.StructLayout({"beta": factor_layout(), "inv": factor_layout()})


class AsqUnit(wiring.Component):
    """Channel sums -> adapter -> factor tables; the factors of the current layer.

    * **Sums.** Pooled values on ``sums`` (16-bit, one a cycle, channel-outer, ``first_pix`` on a
      channel's first pooled pixel, ``end_ch`` on its last) are added per channel in a
      :data:`CHANNEL_SUM_BITS` (32) bit register; at ``end_ch`` the sums memory (16-bit signed) entry
      ``ch`` gets ``S = saturate(round_half_up(sum / 2**SUM_SHIFT))`` (``SUM_SHIFT`` 0: the saturation
      alone; amounts above 62 act as 62; :func:`golden.arith.asq_sums`).
    * **Adapter** (``adapt_start`` then ``adapting``, one term a cycle, words from the ADAPT memory
      (signed 32-bit) at ``A_BASE``: per hidden unit ``j`` the bias ``b1[j]``, the ``N_OUT`` weights
      ``w1[j, :]`` and ``w2[j]``, then ``b2``; weights are a word's low 16 bits, signed):
      ``H = b1[j] + sum_c w1[j, c] * S[c]``, ``h = (ADAPTER_RELU ? max(H, 0) : H) >> H_SHIFT``
      (arithmetic; its low 16 bits, signed; ``H_SHIFT`` above 31 acts as 31), ``Z += w2[j] * h``,
      ``Z += b2``; ``H`` and ``Z`` are 32-bit (wrapping; export proves they fit) and ONE 16 x 16-bit
      multiplier serves both kinds of term (``w1 * S`` and ``w2 * h`` are never in the same cycle);
      :func:`golden.arith.adapter_z`. ``adapt_end`` rises in the cycle after the
      ``HID * (N_OUT + 2)``-th adapter cycle, i.e. the adapter takes ``HID * (N_OUT + 2) + 1`` cycles.
    * **Tables.** ``Z`` goes on the table grid, ``round_half_up(Z / 2**Z_SHIFT)`` clipped to the table
      (:func:`golden.arith.asq_z_index`), and the 42-bit :func:`table_layout` entry is read; it is final
      ``ADAPT_TAIL`` cycles after ``adapt_end``. ``table_commit`` stores the entry's ``beta``
      ``{mant, shift}`` as the factor of layer ``layer`` and makes the quantizer scale
      ``inv = {inv_mant, min(inv_shift + Q_SHIFT, 62)}``.

    ``beta`` is the factor of the current layer's input codes: ``beta_in`` (host) when ``SRC`` is 0,
    else the factor stored for layer ``SRC - 1`` (the address is set by ``SRC``, so ``beta`` is valid
    from the second cycle after the descriptor's ``SRC`` field is latched). ``quant_from_desc``
    loads ``inv = {Q_MULT_LO[:15], min(Q_SHIFT, 62)}`` instead (non-ASQ quantizers).

    Parameters
    ----------
    params : EngineParams
        ``max_layers``, ``max_channels``, ``adapter_words``, host widths (``data_bits`` must hold a
        42-bit TABLE word: :func:`check_host_width`).

    Attributes
    ----------
    desc : In(desc_layout())
        ``SRC``, ``A_BASE``, ``HID``, ``N_OUT``, ``Z_SHIFT``, ``SUM_SHIFT``, ``H_SHIFT``, ``FLAGS``
        (``ADAPTER_RELU``), ``Q_MULT_LO``, ``Q_SHIFT``.
    layer : In(range(max_layers + 1))
        The current layer (where ``table_commit`` stores its factor).
    beta_in : In(factor_layout())
        The network input's factor (host ``CTRL`` 1).
    sums : In(stream.Signature(pooled_layout()))
        Pooled values of the summing walk (always ready).
    adapt_start, adapting : In(1)
        Pulse (reset the adapter, ``Z = 0``) / level (one adapter term a cycle).
    adapt_end : Out(1)
        The adapter's last cycle (combinational, while ``adapting``).
    table_commit, quant_from_desc : In(1)
        Pulses, see above.
    wr_addr : In(addr_bits), wr_data : In(data_bits)
    adapt_we, table_we : In(1)
        Host writes of the ADAPT (``ADAPTER_ACC_BITS`` = 32 signed) and TABLE (42-bit) memories; the
        host port checks the addresses.
    beta : Out(factor_layout())
        Factor ``{mant: 15, shift: 6}`` of the current layer's input codes (combinational from a
        memory read).
    inv : Out(quant_layout())
        Quantizer scale ``{mant: 15, shift: 7}`` of the current layer (register).
    """

    def __init__(self, params: EngineParams):
        require_engine_params(self, params)

        checked(self, lambda: check_host_width(params))
        self.params = p = params
        super().__init__({
            "desc": In(desc_layout()), "layer": In(range(p.max_layers + 1)), "beta_in": In(factor_layout()),
            "sums": In(stream.Signature(pooled_layout())),
            "adapt_start": In(1), "adapting": In(1), "adapt_end": Out(1),
            "table_commit": In(1), "quant_from_desc": In(1),
            "wr_addr": In(p.addr_bits), "wr_data": In(p.data_bits), "adapt_we": In(1), "table_we": In(1),
            "beta": Out(factor_layout()), "inv": Out(quant_layout()),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        d = self.desc
        VB, ACC, WB = arith.VALUE_BITS, arith.ADAPTER_ACC_BITS, arith.ADAPTER_WEIGHT_BITS
        m.submodules.sums_mem = sums_mem = memory.Memory(shape=signed(VB), depth=p.max_channels, init=[])
        sums_wr, sums_rd = sums_mem.write_port(), sums_mem.read_port()
        m.submodules.adapt_mem = adapt_mem = memory.Memory(shape=signed(ACC), depth=p.adapter_words, init=[])
        adapt_wr, adapt_rd = adapt_mem.write_port(), adapt_mem.read_port()
        m.submodules.table_mem = table_mem = memory.Memory(shape=table_layout(), depth=TABLE_ENTRIES, init=[])
        table_wr, table_rd = table_mem.write_port(), table_mem.read_port()
        # the factor each ASQ layer chose, kept per layer: a layer reads its source layer's (SRC)
        m.submodules.betas_mem = betas_mem = memory.Memory(shape=factor_layout(), depth=p.max_layers, init=[])
        betas_wr, betas_rd = betas_mem.write_port(), betas_mem.read_port()
        m.d.comb += [adapt_wr.addr.eq(self.wr_addr), adapt_wr.data.eq(self.wr_data[:ACC]),
                     adapt_wr.en.eq(self.adapt_we),
                     table_wr.addr.eq(self.wr_addr), table_wr.data.eq(self.wr_data[:arith.ASQ_TABLE_BITS]),
                     table_wr.en.eq(self.table_we)]

        # channel sums of the (prescaled) pooled values, scaled by 2**-SUM_SHIFT and saturated
        s = self.sums.payload
        m.d.comb += self.sums.ready.eq(1)
        ssum = Signal(signed(CHANNEL_SUM_BITS))
        new_sum = Signal(signed(CHANNEL_SUM_BITS))
        m.d.comb += new_sum.eq(Mux(s.first_pix, 0, ssum) + s.value)
        with m.If(self.sums.valid):
            m.d.sync += ssum.eq(new_sum)
        sshift = d.sum_shift
        m.d.comb += [sums_wr.addr.eq(s.ch),
                     sums_wr.data.eq(saturate(Mux(sshift == 0, new_sum, round_shift(new_sum, clamp_shift(sshift))),
                                              VB)),
                     sums_wr.en.eq(self.sums.valid & s.end_ch)]

        # the adapter: H = b1 + sum w1*S, h = relu?(H) >> H_SHIFT, Z += w2*h, Z += b2; one term a cycle
        aj, ac = Signal(DESC_BITS), Signal(DESC_BITS)
        a_ptr = Signal(DESC_BITS)
        k_b1, k_w1, k_w2, k_b2 = Signal(), Signal(), Signal(), Signal()
        h_acc = Signal(signed(ACC))
        z = Signal(signed(ACC))
        m.d.sync += [k_b1.eq(0), k_w1.eq(0), k_w2.eq(0), k_b2.eq(0)]
        a_word = adapt_rd.data
        h_act = Signal(signed(ACC))
        m.d.comb += h_act.eq(Mux(d.flags[4] & (h_acc < 0), 0, h_acc))
        h = Signal(signed(WB))
        m.d.comb += h.eq(h_act >> clamp_shift(d.h_shift, ACC - 1))
        # the one multiplier: weight x (S on w1 terms, h on w2 terms)
        operand = Signal(signed(WB))
        m.d.comb += operand.eq(Mux(k_w1, sums_rd.data, h))
        product = Signal(signed(2 * WB))
        m.d.comb += product.eq(a_word[:WB].as_signed() * operand)
        with m.If(k_b1):
            m.d.sync += h_acc.eq(a_word)
        with m.If(k_w1):
            m.d.sync += h_acc.eq(h_acc + product)
        with m.If(k_w2):
            m.d.sync += z.eq(z + product)
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

        # Z on the table grid: round_half_up(Z / 2**Z_SHIFT), clipped, as a table index
        zs = d.z_shift
        zt = Signal(signed(ACC + 1))
        m.d.comb += zt.eq(Mux(zs == 0, z, round_shift(z, clamp_shift(zs))))
        half = TABLE_ENTRIES // 2
        z_idx = Signal(range(TABLE_ENTRIES))
        with m.If(zt < -half):
            m.d.comb += z_idx.eq(0)
        with m.Elif(zt > half - 1):
            m.d.comb += z_idx.eq(TABLE_ENTRIES - 1)
        with m.Else():
            m.d.comb += z_idx.eq(zt + half)
        m.d.comb += table_rd.addr.eq(z_idx)

        # factors: of the input codes (SRC's), and the quantizer's scale
        src = d.src
        m.d.comb += [betas_rd.addr.eq(src - 1), self.beta.eq(Mux(src == 0, self.beta_in, betas_rd.data))]
        entry = table_rd.data
        with m.If(self.quant_from_desc):
            m.d.sync += [self.inv.mant.eq(d.q_mult_lo[:arith.MULT_BITS]), self.inv.shift.eq(clamp_shift(d.q_shift))]
        with m.If(self.table_commit):
            m.d.sync += [self.inv.mant.eq(entry.inv.mant),
                         self.inv.shift.eq(clamp_shift(entry.inv.shift + d.q_shift))]
            m.d.comb += [betas_wr.addr.eq(self.layer), betas_wr.data.eq(entry.beta), betas_wr.en.eq(1)]
        return m
