"""AXI wrapper of the layer engine: an AXI4-Lite register file, an AXI4-Stream loader and result streamer.

:class:`AxiPostEngine` puts :class:`hw.engine.PostEngine` behind the buses an FPGA engineer drops IP
on: an AXI4-Lite slave (32-bit data) for control, status, the cycle counter, the interrupt and
every engine memory; an AXI4-Stream slave (32-bit ``tdata``, ``tlast``) for bulk loads; an
AXI4-Stream master for results; ``irq`` on done. It depends only on the engine's ports
(``host_wr``, ``rd_req``/``rd_resp``, ``start``, ``busy``, ``done``, ``cycles``).
:class:`AxiMap` is the same contract in plain Python (addresses, header words, beat packing) for
host software and testbenches. ``docs/engine.md`` ("AXI wrapper") has the register map.

Handshakes: every ``valid`` and ``ready`` the wrapper drives comes from a register, except the
loader's ``s_axis_tready`` in a frame's payload, which also rises when the engine takes the word
assembled before (``ready`` may depend on the other side's state; never on ``tvalid``). AW and W
are accepted independently (one of each held); a write is answered on B once it has taken effect.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum, IntFlag

from amaranth.back import verilog
from amaranth.hdl import Array, Cat, ClockDomain, Const, Elaboratable, Module, Mux, Shape, Signal
from amaranth.lib import fifo, wiring
from amaranth.lib.wiring import In, Out

from golden import arith
from hw.engine import PostEngine
from hw.program import CHAN_BITS, DESC_BITS, Ctrl, EngineParams, Sel

__all__ = ["AxiLiteSignature", "AxiStreamSignature", "AxiPostEngine", "AxiMap", "Reg", "Status", "Irq",
           "axi_verilog", "axi_ports", "AXI_TOP", "HEADER_MAGIC", "OKAY", "SLVERR", "ID_VALUE"]

#: Top module name of the wrapped Verilog.
AXI_TOP = "post_engine_axi"
#: AXI response codes.
OKAY, SLVERR = 0, 2
#: Bits [31:24] of a load frame's first header word.
HEADER_MAGIC = 0xA5
#: Value of the ``ID`` register: ASCII "POST".
ID_VALUE = 0x504F5354
#: Largest word count of a load frame or a result request (the 16-bit engine address space).
MAX_COUNT = 1 << 16


class Reg(IntEnum):
    """Byte offsets of the AXI4-Lite registers (``docs/engine.md``, "AXI wrapper")."""

    ID = 0x00           #: RO "POST"
    GEOMETRY = 0x04     #: RO rows | cols << 8 | wbits << 16 | abits << 24
    INFO = 0x08         #: RO data_bits | value_bits << 16 | piece_bits << 24
    CONTROL = 0x10      #: W bit 0: start a run (SLVERR while busy); reads 0
    STATUS = 0x14       #: RO :class:`Status`
    CYCLES = 0x18       #: RO cycles of the last run
    IRQ_ENABLE = 0x1C   #: RW :class:`Irq` bits that drive ``irq``
    IRQ_STATUS = 0x20   #: R / write-1-to-clear :class:`Irq` events
    N_LAYERS = 0x24     #: RW engine CTRL 0 (a write is a host write; SLVERR while busy)
    BETA = 0x28         #: RW engine CTRL 1
    FIRST_LAYER = 0x2C  #: RW engine CTRL 2
    OUT_ADDR = 0x30     #: RW next result request: addr [15:0] | sel [18:16]
    OUT_COUNT = 0x34    #: W words of the request (1..65536): queues {sel, addr, count}; SLVERR when full or 0
    LOAD_WORDS = 0x38   #: RO memory words the stream loader wrote since reset (mod 2**32)


class Status(IntFlag):
    """Bits of ``STATUS``."""

    BUSY = 1        #: the engine runs
    DONE = 2        #: the last run ended (engine ``done``)
    LOADING = 4     #: a load frame is in progress or its last word not yet written
    STREAMING = 8   #: result requests queued or being sent
    OUT_FULL = 16   #: the result request queue is full


class Irq(IntFlag):
    """Bits of ``IRQ_ENABLE`` / ``IRQ_STATUS``."""

    DONE = 1        #: a run ended
    LOAD_ERROR = 2  #: a load frame was malformed (bad magic, count 0 or too large, tlast early or missing)


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class AxiMap:
    """The wrapper's address map and stream formats for one :class:`EngineParams` (pure Python).

    A memory word of select ``sel`` is ``word_bits[sel]`` bits wide and travels on the streams as
    ``beats[sel]`` 32-bit beats, least significant first. On AXI4-Lite every memory word has
    ``pieces`` 32-bit registers at ``mem_address(sel, addr, piece)``: write the higher pieces
    first, then piece 0, which commits the word (and clears the staged higher pieces); reading
    piece 0 reads the word and latches it, pieces 1.. return the latched word's other pieces.
    """

    params: EngineParams

    @property
    def pieces(self) -> int:
        """32-bit pieces of a host data word, ``ceil(data_bits / 32)``."""
        return _ceil(self.params.data_bits, 32)

    @property
    def piece_bits(self) -> int:
        return max(1, math.ceil(math.log2(self.pieces)))

    @property
    def addr_width(self) -> int:
        """AXI4-Lite address bits: 1 (memory region) + 3 (sel) + 16 (addr) + piece_bits + 2 (bytes)."""
        return 1 + 3 + self.params.addr_bits + self.piece_bits + 2

    @property
    def mem_base(self) -> int:
        return 1 << (self.addr_width - 1)

    def mem_address(self, sel: int, addr: int, piece: int = 0) -> int:
        """Byte address of piece ``piece`` of word ``addr`` of memory ``sel``."""
        if not 0 <= piece < self.pieces:
            raise ValueError(f"piece {piece} out of range 0..{self.pieces - 1}")
        return (self.mem_base | int(sel) << (self.params.addr_bits + self.piece_bits + 2)
                | int(addr) << (self.piece_bits + 2) | piece << 2)

    @property
    def word_bits(self) -> list[int]:
        """Width of one word of each select (index = ``Sel``)."""
        p = self.params
        return [p.abits, p.weight_word_bits, CHAN_BITS, DESC_BITS, 32, arith.VALUE_BITS, arith.ADAPTER_ACC_BITS,
                arith.ASQ_TABLE_BITS]

    @property
    def beats(self) -> list[int]:
        """32-bit stream beats of one word of each select."""
        return [_ceil(b, 32) for b in self.word_bits]

    @staticmethod
    def header(sel: int, addr: int, count: int) -> list[int]:
        """The two header words of a load frame: ``addr | sel << 16 | MAGIC << 24``, ``count``."""
        if not 1 <= count <= MAX_COUNT:
            raise ValueError(f"a load frame carries 1..{MAX_COUNT} words, got {count}")
        return [(int(addr) & 0xFFFF) | (int(sel) & 7) << 16 | HEADER_MAGIC << 24, int(count)]

    def word_beats(self, sel: int, value: int) -> list[int]:
        """The 32-bit beats of one word (two's complement values are taken modulo the word width)."""
        n = self.beats[sel]
        v = int(value) & ((1 << (32 * n)) - 1)
        return [(v >> (32 * i)) & 0xFFFFFFFF for i in range(n)]

    def load_frames(self, writes) -> list[list[int]]:
        """``(sel, addr, data)`` host writes as load frames (header + payload beats), one per run of
        consecutive addresses of one select, in the order given."""
        frames, run = [], None
        for sel, addr, value in writes:
            sel, addr = int(sel), int(addr)
            if run is not None and run[0] == sel and run[1] + len(run[2]) == addr and len(run[2]) < MAX_COUNT:
                run[2].append(value)
            else:
                if run is not None:
                    frames.append(run)
                run = (sel, addr, [value])
        if run is not None:
            frames.append(run)
        return [self.header(sel, addr, len(vals)) + [b for v in vals for b in self.word_beats(sel, v)]
                for sel, addr, vals in frames]

    def words_from_beats(self, sel: int, beats) -> list[int]:
        """Raw words (unsigned, ``32 * beats[sel]`` bits) from a result frame's beats."""
        n = self.beats[sel]
        if len(beats) % n:
            raise ValueError(f"{len(beats)} beats are not a whole number of {n}-beat words")
        return [sum(int(b) << (32 * i) for i, b in enumerate(beats[k:k + n])) for k in range(0, len(beats), n)]


class AxiLiteSignature(wiring.Signature):
    """AXI4-Lite with 32-bit data, from the manager's side (``Out``: driven by the manager).

    Members: ``awaddr awvalid awready wdata wstrb wvalid wready bresp bvalid bready araddr arvalid
    arready rdata rresp rvalid rready``; a slave port is ``In(AxiLiteSignature(addr_width))``.
    """

    def __init__(self, addr_width: int):
        super().__init__({
            "awaddr": Out(addr_width), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(32), "wstrb": Out(4), "wvalid": Out(1), "wready": In(1),
            "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "araddr": Out(addr_width), "arvalid": Out(1), "arready": In(1),
            "rdata": In(32), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
        })


class AxiStreamSignature(wiring.Signature):
    """AXI4-Stream with 32-bit ``tdata`` and ``tlast``, from the transmitter's side."""

    def __init__(self):
        super().__init__({"tdata": Out(32), "tlast": Out(1), "tvalid": Out(1), "tready": In(1)})


class AxiPostEngine(wiring.Component):
    """:class:`hw.engine.PostEngine` behind AXI4-Lite and AXI4-Stream (``docs/engine.md``, "AXI wrapper").

    Parameters
    ----------
    params : EngineParams
        The engine's parameters.
    out_queue : int
        Depth of the result request queue (``OUT_COUNT`` writes waiting).

    Attributes
    ----------
    s_axil : In(AxiLiteSignature(AxiMap(params).addr_width))
        Registers (:class:`Reg`) below ``mem_base``, memories above (:meth:`AxiMap.mem_address`).
        Memory accesses while the engine runs answer SLVERR and do nothing.
    s_axis : In(AxiStreamSignature())
        Load frames: ``addr | sel << 16 | 0xA5 << 24``, ``count``, then ``count`` words of
        ``beats[sel]`` beats each, ``tlast`` on the last beat. A malformed frame raises
        ``IRQ_STATUS.LOAD_ERROR`` and is skipped up to its ``tlast``.
    m_axis : Out(AxiStreamSignature())
        Result frames: for each queued request ``{sel, addr, count}``, ``count`` words read from
        ``addr`` upward, ``beats[sel]`` beats each, ``tlast`` on the last beat.
    irq : Out(1)
        ``IRQ_STATUS & IRQ_ENABLE`` is not zero (level).
    """

    def __init__(self, params: EngineParams, out_queue: int = 4):
        if not isinstance(params, EngineParams):
            raise TypeError(f"params must be an EngineParams, got {type(params).__name__}")
        if not isinstance(out_queue, int) or out_queue < 1:
            raise ValueError(f"out_queue must be an integer >= 1, got {out_queue!r}")
        self.params = params
        self.map = AxiMap(params)
        self.out_queue = out_queue
        self.engine = PostEngine(params)      #: the wrapped engine (tests watch its host port)
        super().__init__(self.members_for(params))

    @staticmethod
    def members_for(params: EngineParams) -> dict:
        """The signature members (ports) of the wrapper for ``params``."""
        return {"s_axil": In(AxiLiteSignature(AxiMap(params).addr_width)), "s_axis": In(AxiStreamSignature()),
                "m_axis": Out(AxiStreamSignature()), "irq": Out(1)}

    def elaborate(self, platform):
        m = Module()
        p, amap = self.params, self.map
        P, PB, DB, AB = amap.pieces, amap.piece_bits, p.data_bits, p.addr_bits
        m.submodules.engine = eng = self.engine
        beats_of = Array(Const(b, range(P + 1)) for b in amap.beats)
        busy = eng.busy

        # --- host_wr: AXI4-Lite writes first, then the stream loader ------------------
        lw_valid, lw_sel, lw_addr, lw_data = Signal(), Signal(3), Signal(AB), Signal(DB)
        ld_valid, ld_sel, ld_addr, ld_data = Signal(), Signal(3), Signal(AB), Signal(32 * P)
        wr = eng.host_wr
        m.d.comb += [wr.valid.eq(lw_valid | ld_valid),
                     wr.payload.sel.eq(Mux(lw_valid, lw_sel, ld_sel)),
                     wr.payload.addr.eq(Mux(lw_valid, lw_addr, ld_addr)),
                     wr.payload.data.eq(Mux(lw_valid, lw_data, ld_data[:DB]))]
        lw_taken = lw_valid & wr.ready
        ld_taken = ld_valid & ~lw_valid & wr.ready
        wrote = wr.valid & wr.ready
        # shadows of the engine's CTRL registers (written by either source)
        ctrl_shadow = [Signal(32, name=f"ctrl{i}") for i in range(3)]
        with m.If(wrote & (wr.payload.sel == Sel.CTRL)):
            for i, reg in enumerate(ctrl_shadow):
                with m.If(wr.payload.addr == i):
                    m.d.sync += reg.eq(wr.payload.data[:32])

        # --- interrupts -----------------------------------------------------------------
        ier = Signal(2, name="ier")
        isr = Signal(2, name="isr")
        done_prev = Signal()
        m.d.sync += done_prev.eq(eng.done)
        load_error = Signal()            # the loader found a malformed frame (this cycle)
        isr_clear = Signal(2)
        # (whole signals, not bits of one assigned in two places: Icarus would not evaluate a
        # one-bit `always @*` whose input never changes from time 0)
        m.d.sync += isr.eq((isr & ~isr_clear) | Cat(eng.done & ~done_prev, load_error))
        m.d.comb += self.irq.eq((isr & ier) != 0)

        # --- result streamer state (used by the register file) ---------------------------
        m.submodules.out_q = oq = fifo.SyncFIFO(width=3 + AB + 17, depth=self.out_queue)
        out_addr_reg = Signal(AB + 3)
        so_active = Signal()

        # --- loader state (used by the register file) --------------------------------------
        ld_state = Signal(2)             # 0 header 0, 1 header 1, 2 payload, 3 skip to tlast
        load_words = Signal(32)
        start_pend = Signal()
        m.d.comb += eng.start.eq(start_pend & ~ld_valid & ~busy)

        # --- AXI4-Lite write ----------------------------------------------------------------
        axil = self.s_axil
        aw_full, aw_addr = Signal(), Signal(amap.addr_width)
        w_full, w_data, w_strb = Signal(), Signal(32), Signal(4)
        b_valid, b_resp = Signal(), Signal(2)
        m.d.comb += [axil.awready.eq(~aw_full), axil.wready.eq(~w_full),
                     axil.bvalid.eq(b_valid), axil.bresp.eq(b_resp)]
        with m.If(axil.awvalid & ~aw_full):
            m.d.sync += [aw_full.eq(1), aw_addr.eq(axil.awaddr)]
        with m.If(axil.wvalid & ~w_full):
            m.d.sync += [w_full.eq(1), w_data.eq(axil.wdata), w_strb.eq(axil.wstrb)]
        with m.If(b_valid & axil.bready):
            m.d.sync += b_valid.eq(0)
        mask = Cat(w_strb[i].replicate(8) for i in range(4))

        def merged(old):
            return (old & ~mask) | (w_data & mask)

        stage = Signal(32 * P)           # staged pieces 1.. of the next memory write
        do_write = aw_full & w_full & ~b_valid & ~lw_valid & ~start_pend
        wa_mem = aw_addr[-1]
        wa_piece = aw_addr[2:2 + PB]
        wa_word = aw_addr[2 + PB:2 + PB + AB]
        wa_sel = aw_addr[2 + PB + AB:2 + PB + AB + 3]
        wa_reg_ok = aw_addr[12:-1] == 0
        wa_reg = aw_addr[2:12]

        def respond(resp):
            return [b_valid.eq(1), b_resp.eq(resp)]

        out_count = merged(Const(0, 32))
        with m.If(do_write):
            m.d.sync += [aw_full.eq(0), w_full.eq(0)]
            with m.If(wa_mem):
                with m.If(busy | (wa_piece >= P)):
                    m.d.sync += respond(SLVERR)
                with m.Elif(wa_piece == 0):
                    m.d.sync += [lw_valid.eq(1), lw_sel.eq(wa_sel), lw_addr.eq(wa_word),
                                 lw_data.eq(Cat(merged(stage[:32]), stage[32:])), stage.eq(0)]
                with m.Else():
                    m.d.sync += respond(OKAY)
                    for i in range(1, P):
                        with m.If(wa_piece == i):
                            m.d.sync += stage[32 * i:32 * (i + 1)].eq(merged(stage[32 * i:32 * (i + 1)]))
            with m.Elif(~wa_reg_ok):
                m.d.sync += respond(SLVERR)
            with m.Else():
                # an if/elif chain, not a Switch: no partial Verilog case statements
                with m.If(wa_reg == Reg.CONTROL >> 2):
                    with m.If(merged(Const(0, 32))[0]):
                        with m.If(busy):
                            m.d.sync += respond(SLVERR)
                        with m.Else():
                            m.d.sync += start_pend.eq(1)
                    with m.Else():
                        m.d.sync += respond(OKAY)
                with m.Elif(wa_reg == Reg.IRQ_ENABLE >> 2):
                    m.d.sync += [ier.eq(merged(ier)), *respond(OKAY)]
                with m.Elif(wa_reg == Reg.IRQ_STATUS >> 2):
                    m.d.comb += isr_clear.eq(merged(Const(0, 32)))
                    m.d.sync += respond(OKAY)
                for reg, ctrl in ((Reg.N_LAYERS, Ctrl.N_LAYERS), (Reg.BETA, Ctrl.BETA),
                                  (Reg.FIRST_LAYER, Ctrl.FIRST_LAYER)):
                    with m.Elif(wa_reg == reg >> 2):
                        with m.If(busy):
                            m.d.sync += respond(SLVERR)
                        with m.Else():
                            m.d.sync += [lw_valid.eq(1), lw_sel.eq(Sel.CTRL), lw_addr.eq(int(ctrl)),
                                         lw_data.eq(merged(ctrl_shadow[int(ctrl)]))]
                with m.Elif(wa_reg == Reg.OUT_ADDR >> 2):
                    m.d.sync += [out_addr_reg.eq(merged(out_addr_reg)), *respond(OKAY)]
                with m.Elif(wa_reg == Reg.OUT_COUNT >> 2):
                    count_ok = (out_count != 0) & (out_count <= MAX_COUNT)
                    with m.If(count_ok & oq.w_rdy):
                        m.d.comb += [oq.w_en.eq(1), oq.w_data.eq(Cat(out_addr_reg, out_count[:17]))]
                        m.d.sync += respond(OKAY)
                    with m.Else():
                        m.d.sync += respond(SLVERR)
                with m.Elif((wa_reg == Reg.ID >> 2) | (wa_reg == Reg.GEOMETRY >> 2) | (wa_reg == Reg.INFO >> 2)
                            | (wa_reg == Reg.STATUS >> 2) | (wa_reg == Reg.CYCLES >> 2)
                            | (wa_reg == Reg.LOAD_WORDS >> 2)):
                    m.d.sync += respond(OKAY)                # read-only: the write is ignored
                with m.Else():
                    m.d.sync += respond(SLVERR)
        with m.If(lw_taken):
            m.d.sync += [lw_valid.eq(0), *respond(OKAY)]
        with m.If(eng.start):
            m.d.sync += [start_pend.eq(0), *respond(OKAY)]

        # --- engine reads: AXI4-Lite first, then the result streamer -------------------------
        lr_req, lr_wait, lr_sel, lr_addr = Signal(), Signal(), Signal(3), Signal(AB)
        so_req, so_sel, so_addr = Signal(), Signal(3), Signal(AB)
        rd = eng.rd_req
        m.d.comb += [rd.valid.eq(lr_req | so_req),
                     rd.payload.sel.eq(Mux(lr_req, lr_sel, so_sel)),
                     rd.payload.addr.eq(Mux(lr_req, lr_addr, so_addr)),
                     eng.rd_resp.ready.eq(1)]      # both requesters always have room (see below)
        lr_taken = lr_req & rd.ready
        so_taken = so_req & ~lr_req & rd.ready
        owner_lite = Signal()
        with m.If(rd.valid & rd.ready):
            m.d.sync += owner_lite.eq(lr_req)
        resp = eng.rd_resp
        resp_lite = resp.valid & owner_lite
        resp_so = resp.valid & ~owner_lite

        # --- AXI4-Lite read ------------------------------------------------------------------
        ar_full, ar_addr = Signal(), Signal(amap.addr_width)
        r_valid, r_data, r_resp = Signal(), Signal(32), Signal(2)
        r_latch = Signal(32 * P)          # the word piece 0 read; pieces 1.. answer from here
        m.d.comb += [axil.arready.eq(~ar_full), axil.rvalid.eq(r_valid), axil.rdata.eq(r_data),
                     axil.rresp.eq(r_resp)]
        with m.If(axil.arvalid & ~ar_full):
            m.d.sync += [ar_full.eq(1), ar_addr.eq(axil.araddr)]
        with m.If(r_valid & axil.rready):
            m.d.sync += r_valid.eq(0)
        do_read = ar_full & ~r_valid & ~lr_req & ~lr_wait
        ra_piece = ar_addr[2:2 + PB]
        status = Cat(busy, eng.done, (ld_state != 0) | ld_valid, so_active | oq.r_rdy, ~oq.w_rdy)
        g = p.rows | p.cols << 8 | p.wbits << 16 | p.abits << 24
        values = {Reg.ID: Const(ID_VALUE, 32), Reg.GEOMETRY: Const(g & 0xFFFFFFFF, 32),
                  Reg.INFO: Const(DB | arith.VALUE_BITS << 16 | PB << 24, 32), Reg.CONTROL: Const(0, 32),
                  Reg.STATUS: status, Reg.CYCLES: eng.cycles, Reg.IRQ_ENABLE: ier, Reg.IRQ_STATUS: isr,
                  Reg.N_LAYERS: ctrl_shadow[Ctrl.N_LAYERS], Reg.BETA: ctrl_shadow[Ctrl.BETA],
                  Reg.FIRST_LAYER: ctrl_shadow[Ctrl.FIRST_LAYER], Reg.OUT_ADDR: out_addr_reg,
                  Reg.OUT_COUNT: Const(0, 32), Reg.LOAD_WORDS: load_words}
        with m.If(do_read):
            m.d.sync += ar_full.eq(0)
            with m.If(ar_addr[-1]):
                with m.If(busy | (ra_piece >= P)):
                    m.d.sync += [r_valid.eq(1), r_data.eq(0), r_resp.eq(SLVERR)]
                with m.Elif(ra_piece == 0):
                    m.d.sync += [lr_req.eq(1), lr_sel.eq(ar_addr[2 + PB + AB:2 + PB + AB + 3]),
                                 lr_addr.eq(ar_addr[2 + PB:2 + PB + AB])]
                with m.Else():
                    m.d.sync += [r_valid.eq(1), r_data.eq(r_latch.word_select(ra_piece, 32)), r_resp.eq(OKAY)]
            with m.Elif(ar_addr[12:-1] != 0):
                m.d.sync += [r_valid.eq(1), r_data.eq(0), r_resp.eq(SLVERR)]
            with m.Else():
                m.d.sync += [r_valid.eq(1), r_data.eq(0), r_resp.eq(SLVERR)]     # unless a register below
                for reg, value in values.items():
                    with m.If(ar_addr[2:12] == reg >> 2):
                        m.d.sync += [r_data.eq(value), r_resp.eq(OKAY)]
        with m.If(lr_taken):
            m.d.sync += [lr_req.eq(0), lr_wait.eq(1)]
        with m.If(resp_lite):
            m.d.sync += [lr_wait.eq(0), r_valid.eq(1), r_data.eq(resp.payload[:32]), r_resp.eq(OKAY),
                         r_latch.eq(resp.payload)]

        # --- result streamer -----------------------------------------------------------------
        # a request is issued only when the response buffer will have room for its response, so the
        # engine's response is always taken at once and AXI4-Lite reads are never blocked
        buf_depth = 4
        m.submodules.out_buf = ob = fifo.SyncFIFO(width=DB, depth=buf_depth)
        so_outstanding = Signal()
        so_req_left, so_out_left = Signal(17), Signal(17)
        so_piece, so_beats = Signal(range(P + 1)), Signal(range(P + 1))
        m.d.comb += so_req.eq(so_active & (so_req_left != 0) & (ob.level + so_outstanding < buf_depth))
        with m.If(so_taken):
            m.d.sync += [so_outstanding.eq(1), so_addr.eq(so_addr + 1), so_req_left.eq(so_req_left - 1)]
        with m.Elif(resp_so):
            m.d.sync += so_outstanding.eq(0)
        m.d.comb += [ob.w_en.eq(resp_so), ob.w_data.eq(resp.payload)]
        axo = self.m_axis
        last_piece = so_piece == so_beats - 1
        m.d.comb += [axo.tvalid.eq(so_active & ob.r_rdy),
                     axo.tdata.eq(Cat(ob.r_data, Const(0, 32 * P - DB)).word_select(so_piece, 32)),
                     axo.tlast.eq(last_piece & (so_out_left == 1))]
        with m.If(axo.tvalid & axo.tready):
            with m.If(last_piece):
                m.d.comb += ob.r_en.eq(1)
                m.d.sync += [so_piece.eq(0), so_out_left.eq(so_out_left - 1)]
                with m.If(so_out_left == 1):
                    m.d.sync += so_active.eq(0)
            with m.Else():
                m.d.sync += so_piece.eq(so_piece + 1)
        with m.If(~so_active & oq.r_rdy):
            q_addr, q_sel, q_count = oq.r_data[:AB], oq.r_data[AB:AB + 3], oq.r_data[AB + 3:]
            m.d.comb += oq.r_en.eq(1)
            m.d.sync += [so_active.eq(1), so_sel.eq(q_sel), so_addr.eq(q_addr), so_req_left.eq(q_count),
                         so_out_left.eq(q_count), so_piece.eq(0), so_beats.eq(beats_of[q_sel])]

        # --- stream loader ------------------------------------------------------------------
        axs = self.s_axis
        ld_left = Signal(17)
        ld_piece, ld_beats = Signal(range(P + 1)), Signal(range(P + 1))
        ld_free = ~ld_valid | ld_taken
        m.d.comb += axs.tready.eq(ld_free & ~((ld_state == 2) & start_pend))
        beat = axs.tvalid & axs.tready
        tdata, tlast = axs.tdata, axs.tlast
        with m.If(ld_taken):
            m.d.sync += [ld_valid.eq(0), ld_addr.eq(ld_addr + 1), load_words.eq(load_words + 1)]
        with m.If(beat):
            with m.If(ld_state == 0):
                with m.If((tdata[24:32] != HEADER_MAGIC) | tlast):
                    m.d.comb += load_error.eq(1)
                    m.d.sync += ld_state.eq(Mux(tlast, 0, 3))
                with m.Else():
                    m.d.sync += [ld_addr.eq(tdata[:AB]), ld_sel.eq(tdata[16:19]), ld_state.eq(1)]
            with m.Elif(ld_state == 1):
                count_ok = (tdata != 0) & (tdata <= MAX_COUNT)
                with m.If(~count_ok | tlast):
                    m.d.comb += load_error.eq(1)
                    m.d.sync += ld_state.eq(Mux(tlast, 0, 3))
                with m.Else():
                    m.d.sync += [ld_left.eq(tdata[:17]), ld_piece.eq(0), ld_beats.eq(beats_of[ld_sel]),
                                 ld_data.eq(0), ld_state.eq(2)]
            with m.Elif(ld_state == 2):
                for i in range(P):
                    with m.If(ld_piece == i):
                        m.d.sync += ld_data[32 * i:32 * (i + 1)].eq(tdata)
                with m.If(ld_piece == ld_beats - 1):
                    m.d.sync += [ld_valid.eq(1), ld_piece.eq(0), ld_left.eq(ld_left - 1)]
                    with m.If(ld_left == 1):
                        m.d.sync += ld_state.eq(Mux(tlast, 0, 3))
                        m.d.comb += load_error.eq(~tlast)
                    with m.Elif(tlast):
                        m.d.comb += load_error.eq(1)
                        m.d.sync += ld_state.eq(0)
                with m.Else():
                    m.d.sync += ld_piece.eq(ld_piece + 1)
                    with m.If(tlast):                        # the partial word is dropped
                        m.d.comb += load_error.eq(1)
                        m.d.sync += ld_state.eq(0)
            with m.Else():
                with m.If(tlast):
                    m.d.sync += ld_state.eq(0)
        return m


class _AxiTop(Elaboratable):
    """Verilog top: ``aclk`` and active-low ``aresetn`` (synchronous) around :class:`AxiPostEngine`."""

    def __init__(self, params: EngineParams):
        self.core = AxiPostEngine(params)
        self.aclk = Signal()
        self.aresetn = Signal()

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = cd = ClockDomain("sync")
        m.d.comb += [cd.clk.eq(self.aclk), cd.rst.eq(~self.aresetn)]
        m.submodules.core = self.core
        return m

    def port_list(self) -> list[tuple[str, Signal, str]]:
        """``(name, signal, "input" | "output")`` of every top-level port."""
        ports = [("aclk", self.aclk, "input"), ("aresetn", self.aresetn, "input")]
        for path, member, value in self.core.signature.flatten(self.core):
            ports.append(("_".join(map(str, path)), value, "input" if member.flow == In else "output"))
        return ports


def axi_verilog(params: EngineParams) -> str:
    """Verilog of the wrapped engine, top module ``post_engine_axi``: ports ``aclk``, ``aresetn``,
    ``s_axil_*``, ``s_axis_*``, ``m_axis_*``, ``irq`` (the names Vivado and cocotbext-axi expect)."""
    if not isinstance(params, EngineParams):
        raise TypeError(f"params must be an EngineParams, got {type(params).__name__}")
    top = _AxiTop(params)
    # directions None: Amaranth infers them (the signals this design drives are outputs)
    ports = {name: (value, None) for name, value, _ in top.port_list()}
    return verilog.convert(top, name=AXI_TOP, ports=ports, emit_src=False, strip_internal_attrs=True)


def axi_ports(params: EngineParams) -> list[dict]:
    """Ports of ``post_engine_axi`` as ``{name, direction, width}`` dicts."""
    if not isinstance(params, EngineParams):
        raise TypeError(f"params must be an EngineParams, got {type(params).__name__}")
    ports = [{"name": "aclk", "direction": "input", "width": 1}, {"name": "aresetn", "direction": "input", "width": 1}]
    for path, member in wiring.Signature(AxiPostEngine.members_for(params)).members.flatten():
        if not member.is_signature:
            ports.append({"name": "_".join(map(str, path)), "direction": "input" if member.flow == In else "output",
                          "width": Shape.cast(member.shape).width})
    return ports
