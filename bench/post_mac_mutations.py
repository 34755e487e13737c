"""The post-MAC blocks' unit tests against deliberately broken RTL (issue 15, goal 2).

Applies one bug at a time to hw/rescale.py, hw/rescale_unit.py, hw/pool.py, hw/asq_unit.py or
hw/host_port.py, runs that block's test file, restores the source (also on errors), and prints
CAUGHT (the tests failed, as they must) or MISSED per mutation; exits 1 if any was missed. Run from
the repository root::

    PYTHONPATH=$PWD .venv/bin/python bench/post_mac_mutations.py
"""
import pathlib
import subprocess
import sys

M = [
 ("hw/rescale.py", "s2_sh.eq(clamp_shift(sh_raw))", "s2_sh.eq(sh_raw[:6])", "tests/test_hw_rescale.py", "rescale shift not clamped (low 6 bits)"),
 ("hw/rescale.py", "m.d.comb += beta_m.eq((p.mult * self.beta.mant) >> B)", "m.d.comb += beta_m.eq((p.mult * self.beta.mant + (1 << (B - 1))) >> B)", "tests/test_hw_rescale.py", "beta multiplier rounded instead of floored"),
 ("hw/rescale.py", "    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1\n    return Mux(fits", "    lo, hi = -(1 << (bits - 1)) + 1, (1 << (bits - 1)) - 1\n    return Mux(fits", "tests/test_hw_rescale.py", "negative saturation limit off by one"),
 ("hw/rescale.py", "    return ((value >> (amount - 1)[:len(amount)]) + 1) >> 1", "    return ((value >> (amount - 1)[:len(amount)]) + 0) >> 1", "tests/test_hw_rescale.py", "round_shift truncates"),
 ("hw/rescale.py", "round_shift(s3_p, s3_sh) + s3_bias +", "round_shift(s3_p, s3_sh) + (s3_bias >> 1) +", "tests/test_hw_rescale.py", "bias halved"),
 ("hw/rescale.py", "m.d.comb += r.eq(round_shift(s1_p, clamp_shift(self.inv.shift)))", "m.d.comb += r.eq(round_shift(s1_p, self.inv.shift[:6]))", "tests/test_hw_rescale.py", "quantizer shift not clamped (low 6 bits)"),
 ("hw/rescale.py", "beta_sh.eq(p.shift + self.beta.shift - B)", "beta_sh.eq(p.shift + self.beta.shift - B + 1)", "tests/test_hw_rescale.py", "combined shift off by one"),
 ("hw/rescale.py", "res_al.eq(round_shift(self.res * self.res_mult, self.res_shift))", "res_al.eq(round_shift(self.res * self.res_mult[:14], self.res_shift))", "tests/test_hw_rescale.py", "residual multiplier 14 bits"),
 ("hw/rescale_unit.py", "rs.acc_shift.eq(clamp_shift(d.acc_shift, 63))", "rs.acc_shift.eq(d.acc_shift[:1])", "tests/test_hw_rescale_unit.py", "ACC_SHIFT wired from 1 bit"),
 ("hw/rescale_unit.py", "rs.res_mult.eq(d.res_mult[:RES_MULT_BITS])", "rs.res_mult.eq(d.res_mult[:RES_MULT_BITS - 1])", "tests/test_hw_rescale_unit.py", "RES_MULT wired 14 bits"),
 ("hw/pool.py", "m.d.comb += pooled.eq(Mux(pool_sum, saturate(", "m.d.comb += pooled.eq(Mux(pool_sum, (lambda x, b: x)(", "tests/test_hw_pool.py", "sum pooling not saturated"),
 ("hw/pool.py", "round_shift(cur, clamp_shift(pshift))", "round_shift(cur, pshift[:6])", "tests/test_hw_pool.py", "POOL_SHIFT not clamped"),
 ("hw/pool.py", "pre_v.eq(saturate(round_shift(pre_p, clamp_shift(d.q_mult_hi)), VB))", "pre_v.eq(round_shift(pre_p, clamp_shift(d.q_mult_hi)))", "tests/test_hw_pool.py", "prescale not saturated"),
 ("hw/pool.py", "POOL_SUM_BITS = arith.VALUE_BITS + DESC_BITS", "POOL_SUM_BITS = arith.VALUE_BITS + 1", "tests/test_hw_pool.py", "sum-pooling register 17 bits"),
 ("hw/asq_unit.py", "round_shift(new_sum, clamp_shift(sshift))", "(new_sum >> clamp_shift(sshift))", "tests/test_hw_asq_unit.py", "channel sums floored instead of rounded"),
 ("hw/asq_unit.py", "m.d.comb += h.eq(h_act >> clamp_shift(d.h_shift, ACC - 1))", "m.d.comb += h.eq(h_act >> clamp_shift(d.h_shift, ACC - 1) >> 1)", "tests/test_hw_asq_unit.py", "h shifted one too far"),
 ("hw/asq_unit.py", "operand.eq(Mux(k_w1, sums_rd.data, h))", "operand.eq(Mux(k_w2, h, h))", "tests/test_hw_asq_unit.py", "shared multiplier takes h for w1 terms"),
 ("hw/asq_unit.py", "self.inv.shift.eq(clamp_shift(entry.inv.shift + d.q_shift))", "self.inv.shift.eq(clamp_shift(entry.inv.shift))", "tests/test_hw_asq_unit.py", "Q_SHIFT not added to inv_shift"),
 ("hw/asq_unit.py", "self.inv.shift.eq(clamp_shift(d.q_shift))", "self.inv.shift.eq(d.q_shift)", "tests/test_hw_asq_unit.py", "descriptor Q_SHIFT not clamped"),
 ("hw/asq_unit.py", "m.d.comb += h_act.eq(Mux(d.flags[4] & (h_acc < 0), 0, h_acc))", "m.d.comb += h_act.eq(h_acc)", "tests/test_hw_asq_unit.py", "adapter ReLU missing"),
 ("hw/host_port.py", "self.beta_in.eq(wr.data[:arith.FACTOR_BITS])", "self.beta_in.eq(wr.data[:arith.FACTOR_BITS - 1])", "tests/test_hw_host_port.py", "Ctrl.BETA 20 bits"),
]
py = sys.executable
missed = 0
for f, a, b, test, what in M:
    p = pathlib.Path(f); src = p.read_text()
    assert src.count(a) == 1, (f, a)
    p.write_text(src.replace(a, b))
    try:
        r = subprocess.run([py, "-m", "pytest", "-q", "-x", "-n", "0", "-p", "no:cacheprovider", test], capture_output=True, text=True, env={"PYTHONPATH": ".", "PATH": "/usr/bin:/bin"})
        missed += r.returncode == 0
        last = [l for l in r.stdout.splitlines() if l.strip()][-1]
        print(f"{'CAUGHT' if r.returncode else 'MISSED'}  {what:45s} {test}: {last}", flush=True)
    finally:
        p.write_text(src)
sys.exit(1 if missed else 0)
