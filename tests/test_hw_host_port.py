"""hw.host_port.HostPort alone in Amaranth's simulator against a Python model of the memory map.

Random writes (every select, addresses inside and outside each memory, banks >= R, descriptor
fields >= DESC_FIELDS) must raise exactly the write enables the memory map allows, in the cycle
they are taken; CTRL writes set (and clamp) ``n_layers``/``first_layer`` and ``beta_in`` (the 21-bit factor). Random
reads, with the response held back by random stalls, must answer ACT codes zero-extended, RESULT
values sign-extended and 0 elsewhere, the cycle after the request is taken, held until taken. While
``busy`` nothing is taken.
"""

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module, signed, unsigned
from amaranth.lib.memory import Memory

from golden import arith
from hw.host_port import TABLE_ENTRIES, HostPort
from hw.program import DESC_FIELDS, Ctrl, EngineParams, Sel
from test_hw_rescale import run_sim

SMALL = dict(max_fan_in=16, act_words=16, weight_words=64, chan_words=32, result_words=8, max_layers=4,
             adapter_words=16)


class HostHarness(Elaboratable):
    """The port with the ACT banks (written and read through it) and a RESULT memory holding ``result``."""

    def __init__(self, params, result):
        self.params, self.result = params, [int(v) for v in result]
        self.dut = HostPort(params)

    def elaborate(self, platform):
        m = Module()
        p = self.params
        m.submodules.dut = dut = self.dut
        for r in range(p.rows):
            m.submodules[f"act{r}"] = mem = Memory(shape=unsigned(p.abits), depth=p.act_words, init=[])
            wr, rd = mem.write_port(), mem.read_port()
            m.d.comb += [wr.addr.eq(dut.act_word), wr.data.eq(dut.wr_data[:p.abits]), wr.en.eq(dut.act_we[r]),
                         rd.addr.eq(dut.act_raddr), rd.en.eq(dut.act_re), dut.act_rdata[r].eq(rd.data)]
        m.submodules.result = res = Memory(shape=signed(arith.VALUE_BITS), depth=p.result_words, init=self.result)
        rd = res.read_port()
        m.d.comb += [rd.addr.eq(dut.result_raddr), rd.en.eq(dut.result_re), dut.result_rdata.eq(rd.data)]
        return m


def decode(p, sel, addr):
    """The write enables the memory map gives to a write of ``sel``/``addr``."""
    bank, word = addr & ((1 << p.bank_bits) - 1), addr >> p.bank_bits
    we = {"act": 0, "weight": 0, "chan": 0, "adapt": 0, "table": 0, "desc": 0}
    if sel == Sel.ACT and bank < p.rows and word < p.act_words:
        we["act"] = 1 << bank
    we["weight"] = int(sel == Sel.WEIGHT and addr < p.weight_words)
    we["chan"] = int(sel == Sel.CHAN and addr < p.chan_words)
    we["adapt"] = int(sel == Sel.ADAPT and addr < p.adapter_words)
    we["table"] = int(sel == Sel.TABLE and addr < TABLE_ENTRIES)
    we["desc"] = int(sel == Sel.DESC and addr % 64 < DESC_FIELDS and addr // 64 < p.max_layers)
    return we


def random_addr(rng, p, sel=None):
    r = rng.random()
    if sel == Sel.DESC and r < 0.6:                  # the edges of the descriptor slots
        field = int(rng.choice([0, DESC_FIELDS - 1, DESC_FIELDS, 63, int(rng.integers(0, 64))]))
        return int(rng.integers(0, p.max_layers + 1)) * 64 + field
    if sel == Sel.ACT and r < 0.6:                   # mostly inside the banks (a word or bank just outside)
        return int(rng.integers(0, p.act_words + 2)) << p.bank_bits | int(rng.integers(0, 1 << p.bank_bits))
    if r < 0.5:
        return int(rng.integers(0, 4 * p.act_words << p.bank_bits))
    if r < 0.8:
        return int(rng.integers(0, p.max_layers * 64 + 64))
    return int(rng.integers(0, 1 << p.addr_bits))


def run_host(params, ops, result, seed):
    """``ops``: ("w", sel, addr, data) / ("r", sel, addr) / ("busy", n). Returns what the model needs."""
    top = HostHarness(params, result)
    dut = top.dut
    rng = np.random.default_rng(seed)
    log = {"we": [], "resp": [], "ctrl": [], "latency": []}

    async def tb(ctx):
        for op in ops:
            if op[0] == "w":
                _, sel, addr, value = op
                ctx.set(dut.host_wr.valid, 1)
                ctx.set(dut.host_wr.payload, {"sel": sel, "addr": addr, "data": value})
                assert ctx.get(dut.host_wr.ready)
                we = {"act": ctx.get(dut.act_we), "weight": ctx.get(dut.weight_we), "chan": ctx.get(dut.chan_we),
                      "adapt": ctx.get(dut.adapt_we), "table": ctx.get(dut.table_we), "desc": ctx.get(dut.desc_we)}
                log["we"].append((we, ctx.get(dut.wr_addr), ctx.get(dut.wr_data)))
                await ctx.tick()
                ctx.set(dut.host_wr.valid, 0)
                log["ctrl"].append((ctx.get(dut.n_layers), ctx.get(dut.first_layer), ctx.get(dut.beta_in.as_value())))
            elif op[0] == "r":
                _, sel, addr = op
                ctx.set(dut.rd_req.valid, 1)
                ctx.set(dut.rd_req.payload, {"sel": sel, "addr": addr})
                await ctx.tick().until(dut.rd_req.ready)
                ctx.set(dut.rd_req.valid, 0)
                waited = 0
                while rng.random() < 0.4:                    # the host takes the response late
                    assert ctx.get(dut.rd_resp.valid) and not ctx.get(dut.rd_req.ready)
                    await ctx.tick()
                    waited += 1
                ctx.set(dut.rd_resp.ready, 1)
                n = 0
                while not ctx.get(dut.rd_resp.valid):
                    await ctx.tick()
                    n += 1
                log["latency"].append(n)                     # 0: valid right after the accepting edge
                log["resp"].append(ctx.get(dut.rd_resp.payload))
                await ctx.tick()
                ctx.set(dut.rd_resp.ready, 0)
            else:
                ctx.set(dut.busy, 1)
                ctx.set(dut.host_wr.valid, 1)
                ctx.set(dut.host_wr.payload, {"sel": Sel.ACT, "addr": 0, "data": 1})
                ctx.set(dut.rd_req.valid, 1)
                for _ in range(op[1]):
                    assert not ctx.get(dut.host_wr.ready) and not ctx.get(dut.rd_req.ready)
                    assert ctx.get(dut.act_we) == 0 and not ctx.get(dut.act_re) and not ctx.get(dut.result_re)
                    await ctx.tick()
                ctx.set(dut.host_wr.valid, 0)
                ctx.set(dut.rd_req.valid, 0)
                ctx.set(dut.busy, 0)

    run_sim(top, tb, max_cycles=100000)
    return log


@pytest.mark.parametrize("rows,abits", [(1, 4), (3, 8), (4, 2)])
def test_host_port_random(rows, abits):
    params = EngineParams(rows=rows, cols=2, abits=abits, **SMALL)
    rng = np.random.default_rng(rows * 10 + abits)
    vb = arith.VALUE_BITS
    result = rng.integers(-(1 << (vb - 1)), 1 << (vb - 1), params.result_words)
    result[0], result[1] = -(1 << (vb - 1)), -1
    ops, acts = [], {}
    for i in range(400):
        r = rng.random()
        if r < 0.5:
            sel = int(rng.integers(0, 8)) if rng.random() < 0.6 else int(Sel.ACT)
            addr = random_addr(rng, params, sel) if sel != Sel.CTRL else int(rng.integers(0, 4))
            value = int(rng.integers(0, 1 << 62)) if rng.random() < 0.5 else int(rng.integers(0, 16))
            ops.append(("w", sel, addr, value))
        elif r < 0.95:
            sel = int(rng.choice([Sel.ACT, Sel.ACT, Sel.RESULT, Sel.WEIGHT, Sel.CTRL]))
            ops.append(("r", sel, random_addr(rng, params, sel) if sel != Sel.RESULT else int(rng.integers(0, 12))))
        else:
            ops.append(("busy", int(rng.integers(1, 4))))
    log = run_host(params, ops, result, seed=rows)

    writes = iter(log["we"])
    ctrl = iter(log["ctrl"])
    resps = iter(log["resp"])
    n_layers = first = beta = 0
    mask = (1 << params.data_bits) - 1
    for op in ops:
        if op[0] == "w":
            _, sel, addr, value = op
            we, wa, wd = next(writes)
            assert we == decode(params, sel, addr), op
            assert (wa, wd) == (addr, value & mask)
            if we["act"]:
                acts[(addr & ((1 << params.bank_bits) - 1), addr >> params.bank_bits)] = value & ((1 << abits) - 1)
            if sel == Sel.CTRL and addr == Ctrl.N_LAYERS:
                n_layers = min(value, params.max_layers)
            if sel == Sel.CTRL and addr == Ctrl.FIRST_LAYER:
                first = min(value, params.max_layers)
            if sel == Sel.CTRL and addr == Ctrl.BETA:
                beta = value & ((1 << arith.FACTOR_BITS) - 1)          # {mant: 15, shift: 6}
            assert next(ctrl) == (n_layers, first, beta), op
        elif op[0] == "r":
            _, sel, addr = op
            bank, word = addr & ((1 << params.bank_bits) - 1), addr >> params.bank_bits
            if sel == Sel.ACT and bank < rows and word < params.act_words:
                exp = acts.get((bank, word), 0)
            elif sel == Sel.RESULT and addr < params.result_words:
                exp = int(result[addr]) & mask
            else:
                exp = 0
            assert next(resps) == exp, op
    assert set(log["latency"]) == {0} and sum(1 for w, *_ in log["we"] if w["act"]) > 20
    assert any(v for v in acts.values()) and n_layers + first + beta > 0
