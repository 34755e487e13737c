"""Host driver of the AXI-wrapped engine (``post_engine_axi``) for cocotb, on third-party VIP.

:class:`AxiEngineHost` speaks to the wrapper only through cocotbext-axi's ``AxiLiteMaster``,
``AxiStreamSource`` and ``AxiStreamSink``; the address map and the frame formats come from
:class:`hw.axi.AxiMap`. Any cocotb testbench of the wrapped Verilog can use it::

    host = AxiEngineHost(dut, params)
    await host.reset()
    await host.write(program.config_writes)     # CTRL writes through registers, the rest streamed
    await host.write(program.input_writes(x))
    cycles = await host.run()                   # START, wait for irq, clear it, read CYCLES
    values = await host.read(program.output_reads())

``backpressure(p, seed)`` makes every channel idle or stall with probability ``p`` each cycle
(pause generators); they are switched off while the engine runs, so no Python runs per cycle
then.
"""

from __future__ import annotations

import random

from cocotb.triggers import ClockCycles, Timer
from cocotbext.axi import (AxiLiteBus, AxiLiteMaster, AxiStreamBus, AxiStreamFrame, AxiStreamSink,
                           AxiStreamSource)

from hw.axi import OKAY, AxiMap, Irq, Reg
from hw.program import Ctrl, EngineParams, Sel

__all__ = ["AxiEngineHost", "AxiResponseError"]

_CTRL_REGS = {int(Ctrl.N_LAYERS): Reg.N_LAYERS, int(Ctrl.BETA): Reg.BETA, int(Ctrl.FIRST_LAYER): Reg.FIRST_LAYER}


class AxiResponseError(RuntimeError):
    """The wrapper answered SLVERR (or anything but OKAY) to an access the host expected to succeed."""


def _pauses(rng: random.Random, p: float):
    while True:
        yield rng.random() < p


class AxiEngineHost:
    """Drives ``post_engine_axi`` (ports ``aclk``, ``aresetn``, ``s_axil_*``, ``s_axis_*``, ``m_axis_*``,
    ``irq``) through cocotbext-axi.

    Parameters
    ----------
    dut : cocotb handle
        The wrapper (or a testbench top with the same port names).
    params : EngineParams
        The engine's parameters (the address map and word widths follow from them).
    period_ns : int
        Period of ``aclk``.
    """

    def __init__(self, dut, params: EngineParams, period_ns: int = 10):
        self.dut, self.map = dut, AxiMap(params)
        self.period_ns = period_ns     #: the clock period (the irq poll interval is counted in it)
        self.params = params
        clk, rst = dut.aclk, dut.aresetn
        self.lite = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), clk, rst, reset_active_level=False)
        self.source = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis"), clk, rst, reset_active_level=False)
        self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis"), clk, rst, reset_active_level=False)
        for drv in (self.lite.write_if, self.lite.read_if, self.source, self.sink):
            drv.log.setLevel("WARNING")
        self._channels = [self.lite.write_if.aw_channel, self.lite.write_if.w_channel, self.lite.write_if.b_channel,
                          self.lite.read_if.ar_channel, self.lite.read_if.r_channel, self.source, self.sink]
        self._pause = None
        self.stream_words = 0          #: memory words loaded through the stream
        self.lite_accesses = 0         #: AXI4-Lite transactions

    # --- channels ------------------------------------------------------------------
    def backpressure(self, p: float, seed: int = 0) -> None:
        """Random idle cycles (sources) and stalls (sinks) with probability ``p`` per cycle; 0: none."""
        self._pause = (p, random.Random(seed)) if p > 0 else None
        self._set_pauses(True)

    def _set_pauses(self, on: bool) -> None:
        for i, ch in enumerate(self._channels):
            if on and self._pause is not None:
                p, rng = self._pause
                ch.set_pause_generator(_pauses(random.Random(rng.random() + i), p))
            else:
                ch.set_pause_generator(None)
                ch.pause = False

    async def reset(self, cycles: int = 4) -> None:
        self.dut.aresetn.value = 0
        await ClockCycles(self.dut.aclk, cycles)
        self.dut.aresetn.value = 1
        await ClockCycles(self.dut.aclk, 2)

    # --- AXI4-Lite -----------------------------------------------------------------
    async def write_reg(self, addr: int, value: int, expect_ok: bool = True) -> int:
        """Write one 32-bit register; returns BRESP (raises on an error response if ``expect_ok``)."""
        resp = await self.lite.write(int(addr), (int(value) & 0xFFFFFFFF).to_bytes(4, "little"))
        self.lite_accesses += 1
        if expect_ok and int(resp.resp) != OKAY:
            raise AxiResponseError(f"write of {value:#x} to {addr:#x} answered {resp.resp!r}")
        return int(resp.resp)

    async def read_reg(self, addr: int, expect_ok: bool = True) -> int:
        """Read one 32-bit register."""
        resp = await self.lite.read(int(addr), 4)
        self.lite_accesses += 1
        if expect_ok and int(resp.resp) != OKAY:
            raise AxiResponseError(f"read of {addr:#x} answered {resp.resp!r}")
        return int.from_bytes(resp.data, "little")

    async def write_word_lite(self, sel: int, addr: int, value: int) -> None:
        """One memory word through the AXI4-Lite window: pieces high to low, piece 0 commits."""
        n = self.map.beats[int(sel)]
        pieces = self.map.word_beats(int(sel), value)
        for k in range(n - 1, -1, -1):
            await self.write_reg(self.map.mem_address(sel, addr, k), pieces[k])

    async def read_word_lite(self, sel: int, addr: int) -> int:
        """One memory word through the AXI4-Lite window, as the engine returns it (``data_bits`` wide)."""
        n = self.map.beats[int(sel)]
        raw = 0
        for k in range(n):                  # piece 0 reads the word, the others come from the latch
            raw |= await self.read_reg(self.map.mem_address(sel, addr, k)) << (32 * k)
        return self._engine_word(int(sel), raw)

    # --- engine ---------------------------------------------------------------------
    async def write(self, writes) -> None:
        """``(sel, addr, data)`` host writes: CTRL through its registers, everything else as load frames."""
        ctrl = [(s, a, v) for s, a, v in writes if int(s) == Sel.CTRL]
        bulk = [(s, a, v) for s, a, v in writes if int(s) != Sel.CTRL]
        frames = self.map.load_frames(bulk)
        for frame in frames:
            await self.source.send(AxiStreamFrame(b"".join(int(w).to_bytes(4, "little") for w in frame)))
        await self.source.wait()
        self.stream_words += len(bulk)
        for _, addr, value in ctrl:
            await self.write_reg(_CTRL_REGS[int(addr)], value)

    async def run(self, timeout_cycles: int = 10_000_000, poll_cycles: int = 64) -> int:
        """Start a run, wait for ``irq`` (IRQ_ENABLE.DONE; sampled every ``poll_cycles``), clear it;
        returns the CYCLES register."""
        await self.write_reg(Reg.IRQ_ENABLE, Irq.DONE)
        self._set_pauses(False)             # no Python per cycle while the engine computes
        await self.write_reg(Reg.CONTROL, 1)
        waited = 0
        while not int(self.dut.irq.value):
            if waited > timeout_cycles:
                status = await self.read_reg(Reg.STATUS)
                raise AxiResponseError(f"no irq within {timeout_cycles} cycles of START (STATUS {status:#x})")
            await Timer(self.period_ns * poll_cycles, "ns")     # no Python per cycle
            waited += poll_cycles
        self._set_pauses(True)
        status = await self.read_reg(Reg.IRQ_STATUS)
        if status != Irq.DONE:
            raise AxiResponseError(f"IRQ_STATUS {status:#x} after a run (expected DONE only)")
        await self.write_reg(Reg.IRQ_STATUS, Irq.DONE)
        return await self.read_reg(Reg.CYCLES)

    def _engine_word(self, sel: int, raw: int) -> int:
        """A streamed/latched word as the engine's ``rd_resp`` gives it: RESULT sign-extended to data_bits."""
        if sel == Sel.RESULT:
            bits = 32 * self.map.beats[sel]
            if raw >> (bits - 1) & 1:
                raw -= 1 << bits
            return raw & ((1 << self.params.data_bits) - 1)
        return raw

    async def read_range(self, sel: int, addr: int, count: int) -> list[int]:
        """``count`` words of ``sel`` from ``addr`` upward through the result stream."""
        await self.write_reg(Reg.OUT_ADDR, (int(addr) & 0xFFFF) | int(sel) << 16)
        await self.write_reg(Reg.OUT_COUNT, count)
        frame = await self.sink.recv()
        data = bytes(frame.tdata)
        beats = [int.from_bytes(data[i:i + 4], "little") for i in range(0, len(data), 4)]
        words = self.map.words_from_beats(int(sel), beats)
        if len(words) != count:
            raise AxiResponseError(f"result frame of {len(words)} words, expected {count}")
        return [self._engine_word(int(sel), w) for w in words]

    async def read(self, reads, max_gap: int = 8) -> list[int]:
        """Values of ``(sel, addr)`` reads, in order: spans of nearby addresses (gaps up to ``max_gap``
        words) each come as one result frame."""
        wanted = sorted({(int(s), int(a)) for s, a in reads})
        spans = []
        for s, a in wanted:
            if spans and spans[-1][0] == s and a - spans[-1][2] <= max_gap:
                spans[-1][2] = a
            else:
                spans.append([s, a, a])
        got = {}
        for s, lo, hi in spans:
            for k, v in enumerate(await self.read_range(s, lo, hi - lo + 1)):
                got[(s, lo + k)] = v
        return [got[(int(s), int(a))] for s, a in reads]
