"""The AXI wrapper (`hw/axi.py`): register file and stream formats on the Amaranth simulator, then the
trained demo CNN through the generated Verilog driven by third-party verification IP (cocotbext-axi)
on Icarus and Verilator with random idle cycles and backpressure, bit exact against the golden model.
"""

import random
import subprocess

import pytest
from amaranth.sim import Simulator

from hw.axi import (HEADER_MAGIC, ID_VALUE, OKAY, SLVERR, AxiMap, AxiPostEngine, Irq, Reg, Status, axi_verilog)
from hw.build import LINT_WAIVERS
from hw.program import Ctrl, EngineParams, Sel

SMALL = EngineParams(rows=2, cols=2, wbits=4, abits=4, act_words=32, weight_words=16, chan_words=16,
                     result_words=8, max_layers=2, value_words=16, adapter_words=8, max_channels=8, res_words=16)


class _Bus:
    """A cycle-level AXI4-Lite manager and stream endpoints for the Amaranth simulator, with random
    idle cycles before every valid and random ready stalls (``rng``)."""

    def __init__(self, ctx, dut, rng, stall=0.4):
        self.ctx, self.dut, self.rng, self.stall = ctx, dut, rng, stall

    def _idle(self):
        n = 0
        while self.rng.random() < self.stall:
            n += 1
        return n

    async def write(self, addr, data, strb=0xF):
        """AW and W offered independently (each after its own idle cycles); returns BRESP."""
        ctx, a = self.ctx, self.dut.s_axil
        aw_wait, w_wait, aw_done, w_done = self._idle(), self._idle(), False, False
        while not (aw_done and w_done):
            ctx.set(a.awvalid, not aw_done and aw_wait == 0)
            ctx.set(a.awaddr, addr)
            ctx.set(a.wvalid, not w_done and w_wait == 0)
            ctx.set(a.wdata, data)
            ctx.set(a.wstrb, strb)
            aw_hit = ctx.get(a.awvalid) and ctx.get(a.awready)
            w_hit = ctx.get(a.wvalid) and ctx.get(a.wready)
            await ctx.tick()
            aw_done, w_done = aw_done or aw_hit, w_done or w_hit
            aw_wait, w_wait = max(0, aw_wait - 1), max(0, w_wait - 1)
        ctx.set(a.awvalid, 0)
        ctx.set(a.wvalid, 0)
        return await self._response(a.bvalid, a.bready, a.bresp)[0]

    async def _take(self, valid, ready, *fields):
        ctx = self.ctx
        for _ in range(self._idle()):
            await ctx.tick()
        ctx.set(ready, 1)
        for _ in range(10_000):
            if ctx.get(valid):
                got = [ctx.get(f) for f in fields]
                await ctx.tick()
                ctx.set(ready, 0)
                return got
            await ctx.tick()
        raise AssertionError("no response within 10000 cycles")

    def _response(self, valid, ready, *fields):
        return _Awaitable(self._take(valid, ready, *fields))

    async def read(self, addr):
        """Returns (RRESP, RDATA)."""
        ctx, a = self.ctx, self.dut.s_axil
        for _ in range(self._idle()):
            await ctx.tick()
        ctx.set(a.arvalid, 1)
        ctx.set(a.araddr, addr)
        while True:
            hit = ctx.get(a.arready)
            await ctx.tick()
            if hit:
                break
        ctx.set(a.arvalid, 0)
        resp, value = await self._take(a.rvalid, a.rready, a.rresp, a.rdata)
        return resp, value

    async def send(self, beats, last_at=None):
        """Send ``beats`` on ``s_axis`` (``tlast`` on the last, or at index ``last_at``)."""
        ctx, s = self.ctx, self.dut.s_axis
        last_at = len(beats) - 1 if last_at is None else last_at
        for i, b in enumerate(beats):
            for _ in range(self._idle()):
                await ctx.tick()
            ctx.set(s.tvalid, 1)
            ctx.set(s.tdata, b)
            ctx.set(s.tlast, i == last_at)
            while True:
                hit = ctx.get(s.tready)
                await ctx.tick()
                if hit:
                    break
            ctx.set(s.tvalid, 0)

    async def receive(self, n):
        """Take ``n`` beats from ``m_axis``; returns [(tdata, tlast)]."""
        got = []
        for _ in range(n):
            got.append(tuple(await self._take(self.dut.m_axis.tvalid, self.dut.m_axis.tready,
                                              self.dut.m_axis.tdata, self.dut.m_axis.tlast)))
        return got


class _Awaitable:
    def __init__(self, coro):
        self.coro = coro

    def __await__(self):
        return self.coro.__await__()

    def __getitem__(self, i):
        async def pick():
            return (await self.coro)[i]
        return _Awaitable(pick())


def _simulate(params, body, seed):
    """Run ``body(bus, writes)`` on an :class:`AxiPostEngine`; ``writes`` collects every transfer on
    the engine's ``host_wr`` port as ``(sel, addr, data)``."""
    dut = AxiPostEngine(params)
    writes = []

    async def monitor(ctx):
        wr = dut.engine.host_wr
        async for _, _, valid, ready, payload in ctx.tick().sample(wr.valid, wr.ready, wr.payload.as_value()):
            if valid and ready:
                f = params.addr_bits
                writes.append((payload & 7, (payload >> 3) & ((1 << f) - 1), payload >> (3 + f)))

    async def tb(ctx):
        await body(_Bus(ctx, dut, random.Random(seed)), writes)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_process(monitor)
    sim.add_testbench(tb)
    sim.run()
    return writes


@pytest.mark.parametrize("seed", [1, 2])
def test_register_file(seed):
    """Identification, control registers forwarded to the engine's CTRL, strobes, read-only and
    unmapped addresses, the memory window (pieces staged, piece 0 commits), the IRQ registers."""
    amap = AxiMap(SMALL)
    checks = {}

    async def body(bus, writes):
        assert await bus.read(Reg.ID) == (OKAY, ID_VALUE)
        resp, geometry = await bus.read(Reg.GEOMETRY)
        assert geometry == 2 | 2 << 8 | 4 << 16 | 4 << 24
        resp, info = await bus.read(Reg.INFO)
        assert info == SMALL.data_bits | SMALL.value_bits << 16 | amap.piece_bits << 24
        assert await bus.write(Reg.N_LAYERS, 2) == OKAY
        assert await bus.write(Reg.BETA, 0x1234567) == OKAY
        assert await bus.write(Reg.BETA, 0xAB000000, strb=0b1000) == OKAY     # only the top byte
        assert await bus.read(Reg.BETA) == (OKAY, 0xAB234567)
        assert await bus.write(Reg.FIRST_LAYER, 1) == OKAY
        assert await bus.read(Reg.N_LAYERS) == (OKAY, 2)
        checks["ctrl"] = list(writes)
        writes.clear()
        assert await bus.write(Reg.ID, 5) == OKAY                          # read-only: ignored
        assert await bus.read(Reg.ID) == (OKAY, ID_VALUE)
        assert await bus.write(0x3C, 1) == SLVERR                          # unmapped
        assert (await bus.read(0x40))[0] == SLVERR
        assert (await bus.read(0x1000))[0] == SLVERR
        assert amap.pieces == 2 and amap.piece_bits == 1                   # 42-bit words (TABLE)
        # a 40-bit CHAN word through the window: piece 1, then 0 commits
        word = (0x55 << 32) | 0x89ABCDEF
        assert await bus.write(amap.mem_address(Sel.CHAN, 3, 1), word >> 32) == OKAY
        assert await bus.write(amap.mem_address(Sel.CHAN, 3, 0), word & 0xFFFFFFFF) == OKAY
        assert await bus.write(amap.mem_address(Sel.DESC, 65, 0), 0xBEEF) == OKAY   # staging was cleared
        assert await bus.write(amap.mem_address(Sel.ACT, 5, 0), 9) == OKAY
        assert await bus.write(amap.mem_address(Sel.ACT, 6, 0), 0xF3, strb=0b0001) == OKAY
        checks["window"] = list(writes)
        assert await bus.read(amap.mem_address(Sel.ACT, 5)) == (OKAY, 9)
        assert await bus.read(amap.mem_address(Sel.ACT, 6)) == (OKAY, 3)   # 4-bit codes
        assert await bus.read(amap.mem_address(Sel.ACT, 6, 1)) == (OKAY, 0)
        # interrupts: a run of zero layers ends at once and raises DONE
        assert await bus.write(Reg.N_LAYERS, 0) == OKAY
        assert await bus.write(Reg.FIRST_LAYER, 0) == OKAY
        assert await bus.write(Reg.IRQ_ENABLE, Irq.DONE) == OKAY
        assert not bus.ctx.get(bus.dut.irq)
        assert await bus.write(Reg.CONTROL, 1) == OKAY
        for _ in range(5):
            await bus.ctx.tick()
        assert bus.ctx.get(bus.dut.irq)
        assert await bus.read(Reg.IRQ_STATUS) == (OKAY, Irq.DONE)
        resp, status = await bus.read(Reg.STATUS)
        assert status & Status.DONE and not status & Status.BUSY
        assert await bus.read(Reg.CYCLES) == (OKAY, 1)
        assert await bus.write(Reg.IRQ_STATUS, Irq.DONE) == OKAY           # write 1 to clear
        assert await bus.read(Reg.IRQ_STATUS) == (OKAY, 0)
        assert not bus.ctx.get(bus.dut.irq)

    _simulate(SMALL, body, seed)
    assert checks["ctrl"] == [(Sel.CTRL, Ctrl.N_LAYERS, 2), (Sel.CTRL, Ctrl.BETA, 0x1234567),
                              (Sel.CTRL, Ctrl.BETA, 0xAB234567), (Sel.CTRL, Ctrl.FIRST_LAYER, 1)]
    assert checks["window"] == [(Sel.CHAN, 3, (0x55 << 32) | 0x89ABCDEF), (Sel.DESC, 65, 0xBEEF),
                                (Sel.ACT, 5, 9), (Sel.ACT, 6, 0xF3)]


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_stream_load_and_result_stream(seed):
    """Load frames of every width with random idle cycles, malformed frames in between (flagged and
    skipped), then result frames under random backpressure and the same words through AXI4-Lite."""
    amap = AxiMap(SMALL)
    rng = random.Random(seed)
    acts = [(Sel.ACT, a, rng.getrandbits(4)) for a in range(10, 30)]
    good = ([(Sel.WEIGHT, 2 + i, rng.getrandbits(16)) for i in range(3)]
            + [(Sel.CHAN, i, rng.getrandbits(40)) for i in range(2)]
            + [(Sel.ADAPT, 4, rng.getrandbits(32))] + acts)
    frames = amap.load_frames(good)
    assert [f[0] >> 24 for f in frames] == [HEADER_MAGIC] * 4
    bad = [[0x12 << 24 | 5, 1, 7],                                      # bad magic: skipped up to tlast
           amap.header(Sel.ACT, 0, 3) + [1, 2],                         # tlast early: 2 words written
           amap.header(Sel.ACT, 3, 1) + [4, 5, 6]]                      # tlast late: extra beats skipped
    got = {}

    async def body(bus, writes):
        for f in frames[:2]:
            await bus.send(f)
        await bus.send(bad[0])
        assert (await bus.read(Reg.IRQ_STATUS)) == (OKAY, Irq.LOAD_ERROR)
        assert await bus.write(Reg.IRQ_STATUS, Irq.LOAD_ERROR) == OKAY
        await bus.send(bad[1])
        await bus.send(bad[2])
        for f in frames[2:]:
            await bus.send(f)
        for _ in range(3):
            await bus.ctx.tick()
        assert (await bus.read(Reg.IRQ_STATUS)) == (OKAY, Irq.LOAD_ERROR)
        assert (await bus.read(Reg.LOAD_WORDS)) == (OKAY, len(good) + 3)
        resp, status = await bus.read(Reg.STATUS)
        assert not status & Status.LOADING
        # two queued requests: activations 10..29, then 0..3 (written by the malformed frames)
        assert await bus.write(Reg.OUT_ADDR, 10 | Sel.ACT << 16) == OKAY
        assert await bus.write(Reg.OUT_COUNT, 20) == OKAY
        assert await bus.write(Reg.OUT_ADDR, 0 | Sel.ACT << 16) == OKAY
        assert await bus.write(Reg.OUT_COUNT, 4) == OKAY
        assert await bus.write(Reg.OUT_COUNT, 0) == SLVERR
        assert await bus.write(Reg.OUT_ADDR, 0 | Sel.CHAN << 16) == OKAY     # 2 beats a word (reads answer 0)
        assert await bus.write(Reg.OUT_COUNT, 2) == OKAY
        got["stream"] = await bus.receive(24)
        got["chan"] = await bus.receive(4)
        got["lite"] = [(await bus.read(amap.mem_address(Sel.ACT, a)))[1] for a in (10, 17, 29)]
        got["writes"] = list(writes)

    _simulate(SMALL, body, seed)
    expected_writes = good[:5] + [(Sel.ACT, 0, 1), (Sel.ACT, 1, 2), (Sel.ACT, 3, 4)] + good[5:]
    assert got["writes"] == [(s, a, v & ((1 << SMALL.data_bits) - 1)) for s, a, v in expected_writes]
    values = [v for _, _, v in acts] + [1, 2, 0, 4]
    assert [d for d, _ in got["stream"]] == values
    assert [last for _, last in got["stream"]] == [0] * 19 + [1] + [0] * 3 + [1]
    assert got["chan"] == [(0, 0)] * 3 + [(0, 1)]
    assert got["lite"] == [acts[0][2], acts[7][2], acts[19][2]]


def test_axi_map_round_trip():
    amap = AxiMap(EngineParams(rows=4, cols=4, wbits=8, abits=8))
    assert amap.pieces == 4 and amap.piece_bits == 2 and amap.addr_width == 24
    assert amap.mem_address(Sel.RESULT, 3, 1) == 0x800000 | 5 << 20 | 3 << 4 | 4
    assert amap.beats == [1, 4, 2, 1, 1, 1, 1, 2]      # CHAN 40, RESULT 16, ADAPT 32, TABLE 42 bits
    assert amap.words_from_beats(Sel.ADAPT, amap.word_beats(Sel.ADAPT, -5)) == [(1 << 32) - 5]
    with pytest.raises(ValueError, match="1..65536"):
        amap.header(Sel.ACT, 0, 0)


# --- the generated Verilog --------------------------------------------------------------

def test_generate_bus_axi(tmp_path, capsys):
    """`generate --bus axi` writes post_engine_axi.v with AXI port names and the map in the manifest."""
    import json

    from flows.cli import main
    out = tmp_path / "rtl"
    assert main(["generate", "--bus", "axi", "--rows", "4", "--cols", "4", "--wbits", "8", "--abits", "8",
                 "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["top"] == "post_engine_axi" and result["verilog"].endswith("post_engine_axi.v")
    manifest = json.loads((out / "manifest.json").read_text())
    names = {p["name"] for p in manifest["ports"]}
    assert {"aclk", "aresetn", "s_axil_awaddr", "s_axil_bresp", "s_axil_rdata", "s_axis_tdata", "s_axis_tlast",
            "m_axis_tvalid", "m_axis_tready", "irq"} <= names
    assert manifest["axi"]["mem_base"] == 0x800000 and manifest["axi"]["registers"]["out_count"] == Reg.OUT_COUNT
    assert "module post_engine_axi" in (out / "post_engine_axi.v").read_text()


def test_axi_verilator_lint_wall(tmp_path):
    """`verilator --lint-only -Wall` on the wrapped Verilog with exactly the README's waivers."""
    from sim.rtl import simulator_env
    path = tmp_path / "post_engine_axi.v"
    path.write_text(axi_verilog(EngineParams(rows=4, cols=4, wbits=8, abits=8)))
    proc = subprocess.run(["verilator", "--lint-only", "-Wall", *LINT_WAIVERS, "--top-module", "post_engine_axi",
                           str(path)], capture_output=True, text=True, env=simulator_env())
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "%Warning" not in proc.stderr and "%Error" not in proc.stderr, proc.stderr[-4000:]


# --- the trained demo CNN through cocotbext-axi ------------------------------------------------

SAMPLES = {"icarus": 1, "verilator": 3}


@pytest.fixture(scope="module")
def cnn_job(trained_cnn):
    """The demo CNN's program and the golden integer executor's run of the first digits test samples."""
    from flows.compile import compile_graph, expected_outputs
    from golden.data import load_digits_split
    from golden.intdag import run_graph

    n = max(SAMPLES.values())
    program = compile_graph(trained_cnn)
    _, _, x_test, _ = load_digits_split()
    golden = run_graph(trained_cnn, x_test[:n])
    return program, golden.codes[0].reshape(n, -1), golden.betas[0], expected_outputs(trained_cnn, program, golden)


@pytest.fixture(scope="module")
def axi_runs(cnn_job):
    """One run per simulator (built once: the build cache of sim/axi_rtl.py), random backpressure."""
    from sim.axi_rtl import run_axi_rtl
    program, codes, betas, _ = cnn_job
    runs = {}

    def get(backend):
        if backend not in runs:
            n = SAMPLES[backend]
            runs[backend] = run_axi_rtl(program, codes[:n], backend=backend,
                                        betas=None if betas is None else betas[:n], backpressure=0.3,
                                        seed=len(backend))
        return runs[backend]
    return get


@pytest.mark.parametrize("backend", ["icarus", "verilator"])
def test_trained_cnn_through_axi(backend, cnn_job, axi_runs):
    """Every output of every layer equals the golden model; cycles equal the schedule; the AXI4-Lite
    window reads the same final-layer words the result stream sent."""
    from hw.program import predicted_cycles
    from sim.compare import compare_outputs
    program, _, _, expected = cnn_job
    run = axi_runs(backend)
    n = SAMPLES[backend]
    cmp = compare_outputs([e[:n] for e in expected], run.outputs, [layer.name for layer in program.layers])
    assert cmp.ok, cmp.summary()
    assert cmp.mismatches == 0 and cmp.values == n * sum(layer.out_size for layer in program.layers)
    assert run.cycles == [predicted_cycles(program.params, program)] * n
    assert run.window == run.window_stream and len(run.window) == 4
    assert run.stream_words > len(program.config_writes)          # configuration and inputs were streamed


def test_corrupted_expected_value_fails_the_axi_comparison(cnn_job, axi_runs):
    """The comparison is not vacuous: one expected value off by one is reported where it is."""
    from sim.compare import compare_outputs
    program, _, _, expected = cnn_job
    run = axi_runs("verilator")
    names = [layer.name for layer in program.layers]
    n = SAMPLES["verilator"]
    bad = [e[:n].copy() for e in expected]
    bad[1][n - 1, 7] += 1
    cmp = compare_outputs(bad, run.outputs, names)
    assert not cmp.ok and cmp.mismatches == 1
    assert (cmp.first[0].layer, cmp.first[0].sample, cmp.first[0].index) == (names[1], n - 1, 7)
