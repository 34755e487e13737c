"""The engine's sequencer: run control, descriptor fetch and the layer schedule (``docs/engine.md``).

The sequencer owns the descriptor memory (``DESC``), reads one layer's DESC_FIELDS (47) fields into the
descriptor register :func:`desc_layout` and steps through the layer's phases (FEED, TAIL, WALK,
FLUSH, ADAPT, TABLE), starting and waiting for the component that does each phase's work: the
feed generator (:class:`hw.feed.FeedGenerator`), the channel rescale unit
(:class:`hw.rescale.RescaleUnit`), the pooling walk (:class:`hw.pool.PoolingWalk`) and the ASQ
unit (:class:`hw.asq_unit.AsqUnit`). The schedule, and so the cycle count, is the module
docstring of :mod:`hw.engine`.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal, signed, unsigned
from amaranth.lib import data, enum, memory, wiring
from amaranth.lib.wiring import In, Out

from hw.program import (ADAPT_TAIL, DESC_BITS, DESC_FIELDS, DESC_STRIDE, SIGNED_FIELDS, WALK_FLUSH, DescField,
                        EngineParams, require_engine_params)

__all__ = ["Sequencer", "State", "desc_layout", "desc_const", "DESC_FIELD_BITS"]

#: Bits per descriptor field in :func:`desc_layout` (every field is one 16-bit DESC word).
DESC_FIELD_BITS = DESC_BITS


def desc_layout() -> data.StructLayout:
    """One layer descriptor: the fields of :class:`hw.program.DescField`, lower-case, in field order,
    16 bits each (``SIGNED_FIELDS`` signed); field ``f`` occupies bits ``16*f .. 16*f + 15``."""
    return data.StructLayout({f.name.lower(): signed(DESC_BITS) if f in SIGNED_FIELDS else unsigned(DESC_BITS)
                              for f in DescField})


def desc_const(values) -> int:
    """The :func:`desc_layout` bits of a descriptor given as its field values (``DescField`` order, as
    ``Program.layouts[i].fields()`` lists them, or a ``{DescField: value}`` mapping; missing
    fields 0); signed fields as 16-bit two's complement."""
    if isinstance(values, dict):
        values = [values.get(f, 0) for f in DescField]
    values = list(values)
    if len(values) != DESC_FIELDS:
        raise ValueError(f"a descriptor has {DESC_FIELDS} fields, got {len(values)}")
    mask = (1 << DESC_BITS) - 1
    return sum((int(v) & mask) << (DESC_BITS * f) for f, v in enumerate(values))


class State(enum.Enum, shape=4):
    """Sequencer states (``hw.engine``'s "Schedule")."""

    IDLE = 0
    LAYER = 1
    DESC = 2
    FEED = 3
    TAIL = 4
    WALK = 5
    FLUSH = 6
    ADAPT = 7
    TABLE = 8


class Sequencer(wiring.Component):
    """Run control and layer phases of the engine; owns the descriptor memory.

    Phases of a layer (cycle counts are those of :func:`hw.program.layer_cycles`):
    ``LAYER`` 1 cycle; ``DESC`` ``DESC_FIELDS + 1`` cycles (field ``f`` is read in cycle ``f`` and
    latched into ``desc`` at the end of cycle ``f + 1``); ``FEED`` until ``feed_end``; ``TAIL``
    until ``feed_idle & rescale_idle``; then, unless the layer is final, ``WALK`` until
    ``walk_end`` and ``FLUSH`` ``WALK_FLUSH`` cycles, with an ASQ quantizer first a summing walk,
    ``ADAPT`` until ``adapt_end``, ``TABLE`` ``ADAPT_TAIL`` cycles, then the quantizing walk.
    Every handshake below is a level or a one-cycle pulse, combinational in the cycle whose clock
    edge makes the transition, so a component started by a pulse sees it in the same cycle as
    the sequencer's state change.

    Parameters
    ----------
    params : EngineParams
        ``max_layers`` (descriptor slots) and the host address width.

    Attributes
    ----------
    start : In(1)
        One-cycle pulse while idle: run slots ``first_layer`` .. ``n_layers - 1``.
    busy : Out(1)
        High from the cycle after ``start`` until the run ends (register).
    done : Out(1)
        High from the end of a run until the next ``start`` (register, low after reset).
    cycles : Out(32)
        Cycles of the last run: counts every cycle in which ``busy`` is high (register).
    n_layers, first_layer : In(range(max_layers + 1))
        The host's ``CTRL`` registers.
    desc_we : In(1)
        Host write of DESC word ``wr_addr`` (``layer * 64 + field``) with ``wr_data[:16]``;
        the host port checks the address.
    wr_addr : In(params.addr_bits)
    wr_data : In(params.data_bits)
    desc : Out(desc_layout())
        The current layer's descriptor (registers; constant from FEED to the layer's end).
    layer : Out(range(max_layers + 1))
        The current descriptor slot.
    feed_start : Out(1)
        Pulse in the last DESC cycle: the feed generator and the rescale unit reset their counters.
    feeding : Out(1)
        Level, state FEED.
    feed_end : In(1)
        The feed generator's last cycle of the layer.
    feed_idle, rescale_idle : In(1)
        No array step pending / nothing left in the array, drain or rescale pipeline.
    walk_start : Out(1)
        Pulse: the pooling walk starts (``sum_pass`` valid from the next cycle on).
    sum_pass : Out(1)
        Register: 1 during the ASQ summing walk, 0 during a quantizing walk.
    quant_from_desc : Out(1)
        Pulse with ``walk_start`` of a non-ASQ quantizing walk: the quantizer multiplier is
        ``Q_MULT_LO | Q_MULT_HI << 16``.
    walk_end : In(1)
        The pooling walk's last tap.
    adapt_start : Out(1)
        Pulse: the ASQ unit resets its adapter (after the summing walk's flush).
    adapting : Out(1)
        Level, state ADAPT.
    adapt_end : In(1)
        The ASQ adapter's last term (``aj == HID``).
    table_commit : Out(1)
        Pulse in the last TABLE cycle: the ASQ unit takes the factor table's entry.
    """

    def __init__(self, params: EngineParams):
        require_engine_params(self, params)
        self.params = params
        slots = range(params.max_layers + 1)
        super().__init__({
            "start": In(1), "busy": Out(1), "done": Out(1), "cycles": Out(32),
            "n_layers": In(slots), "first_layer": In(slots),
            "desc_we": In(1), "wr_addr": In(params.addr_bits), "wr_data": In(params.data_bits),
            "desc": Out(desc_layout()), "layer": Out(slots),
            "feed_start": Out(1), "feeding": Out(1), "feed_end": In(1),
            "feed_idle": In(1), "rescale_idle": In(1),
            "walk_start": Out(1), "sum_pass": Out(1), "quant_from_desc": Out(1), "walk_end": In(1),
            "adapt_start": Out(1), "adapting": Out(1), "adapt_end": In(1), "table_commit": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        m.submodules.desc_mem = desc_mem = memory.Memory(shape=unsigned(DESC_BITS),
                                                         depth=p.max_layers * DESC_STRIDE, init=[])
        desc_wr, desc_rd = desc_mem.write_port(), desc_mem.read_port()
        m.d.comb += [desc_wr.addr.eq(self.wr_addr), desc_wr.data.eq(self.wr_data[:DESC_BITS]),
                     desc_wr.en.eq(self.desc_we)]

        layer = self.layer
        flags = self.desc.flags
        final, asq = flags[0], flags[3]
        fcnt = Signal(range(DESC_FIELDS + 1))     # descriptor field being read
        flush = Signal(range(max(WALK_FLUSH, ADAPT_TAIL) + 1))
        m.d.comb += desc_rd.addr.eq(Cat(fcnt[:6], layer))
        desc_bits = self.desc.as_value()

        with m.If(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)

        def start_walk(sums: bool):
            m.d.comb += self.walk_start.eq(1)
            m.d.sync += [self.sum_pass.eq(sums), state.eq(State.WALK)]

        # explicit state register decoded with an if/elif chain (no partial Verilog case
        # statements); any unused encoding behaves as TABLE
        state = Signal(State)
        m.d.comb += [self.feeding.eq(state == State.FEED), self.adapting.eq(state == State.ADAPT)]
        with m.If(state == State.IDLE):
            with m.If(self.start):
                m.d.sync += [self.busy.eq(1), self.done.eq(0), self.cycles.eq(0), layer.eq(self.first_layer),
                             state.eq(State.LAYER)]
        with m.Elif(state == State.LAYER):
            with m.If(layer >= self.n_layers):
                m.d.sync += [self.busy.eq(0), self.done.eq(1), state.eq(State.IDLE)]
            with m.Else():
                m.d.sync += [fcnt.eq(0), state.eq(State.DESC)]
        with m.Elif(state == State.DESC):
            # cycle f reads field f and latches field f - 1 (read latency 1)
            m.d.sync += fcnt.eq(fcnt + 1)
            for f in DescField:
                with m.If(fcnt == f + 1):
                    m.d.sync += desc_bits[DESC_BITS * f:DESC_BITS * (f + 1)].eq(desc_rd.data)
            with m.If(fcnt == DESC_FIELDS):
                m.d.comb += self.feed_start.eq(1)
                m.d.sync += state.eq(State.FEED)
        with m.Elif(state == State.FEED):
            with m.If(self.feed_end):
                m.d.sync += state.eq(State.TAIL)
        with m.Elif(state == State.TAIL):
            with m.If(self.feed_idle & self.rescale_idle):
                with m.If(final):
                    m.d.sync += [layer.eq(layer + 1), state.eq(State.LAYER)]
                with m.Elif(asq):
                    start_walk(True)
                with m.Else():
                    start_walk(False)
                    m.d.comb += self.quant_from_desc.eq(1)
        with m.Elif(state == State.WALK):
            with m.If(self.walk_end):
                m.d.sync += [flush.eq(0), state.eq(State.FLUSH)]
        with m.Elif(state == State.FLUSH):
            m.d.sync += flush.eq(flush + 1)
            with m.If(flush == WALK_FLUSH - 1):
                with m.If(self.sum_pass):
                    m.d.comb += self.adapt_start.eq(1)
                    m.d.sync += state.eq(State.ADAPT)
                with m.Else():
                    m.d.sync += [layer.eq(layer + 1), state.eq(State.LAYER)]
        with m.Elif(state == State.ADAPT):
            with m.If(self.adapt_end):
                m.d.sync += [flush.eq(0), state.eq(State.TABLE)]
        with m.Else():                              # State.TABLE: z final, index, table read
            m.d.sync += flush.eq(flush + 1)
            with m.If(flush == ADAPT_TAIL - 1):
                m.d.comb += self.table_commit.eq(1)
                start_walk(False)
        return m
