"""Plot the 4-bit level sets of uniform, POT, POST (and APoT), like Fig. 3 of the ASQ/POST paper.

Each panel shows the quantization function ``Q(v)`` on the normalised range [-1, 1] (alpha = 1),
its levels as dots, and an inset that zooms into [0, ZOOM] = [0, 0.25] near zero, where POT crowds
its levels (1/64 ... 1/4), POST has three (0.125, 0.177, 0.25) and uniform one (1/7). POST's denser
resolution near zero than uniform, without POT's waste, is the paper's point. The uniform panel uses the symmetric set (15 levels,
``Q(v) = round(7 v) / 7``) so all four panels have the same ``2**4 - 1`` levels. Level sets come
from :mod:`golden.levels`. Usage::

    .venv/bin/python bench/plot_levels.py [--bits 4] [--out docs/levels.png]

Needs matplotlib (not a runtime dependency of the package).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from golden import levels as L  # noqa: E402

#: Upper end of the inset that zooms in near zero.
ZOOM = 0.25

PANELS = (("uniform", "Uniform (symmetric)"), ("pot", "POT: {0, ±2^-k}"), ("post", "POST: {0, ±(√2)^-k}"),
          ("apot", "APoT (Li et al. 2020)"))


def quantize(quant: str, bits: int, v: np.ndarray) -> np.ndarray:
    """Nearest level of each normalised value (ties to the larger magnitude), as the quantizers do."""
    if quant == "uniform":
        qp = 2 ** (bits - 1) - 1
        return np.clip(np.floor(v * qp + 0.5), -qp, qp) / qp
    codes = L.encode_magnitude(v, L.magnitudes(quant, bits), bits)
    return L.code_values(quant, bits)[codes]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--out", default=str(REPO / "docs" / "levels.png"))
    args = ap.parse_args(argv)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v = np.linspace(-1.0, 1.0, 8001)
    fig, axes = plt.subplots(2, 2, figsize=(10, 9))
    for ax, (quant, title) in zip(axes.flat, PANELS):
        levels = L.level_set(quant, args.bits, symmetric=True) if quant == "uniform" else \
            L.level_set(quant, args.bits)
        ax.plot(v, quantize(quant, args.bits, v), lw=1.2, color="C0", label="Q(v)")
        ax.plot(v, v, lw=0.6, ls="--", color="0.6")
        ax.plot(levels, levels, "o", ms=3.5, color="C3", label="levels")
        for lv in levels:
            ax.axhline(lv, lw=0.3, color="0.85", zorder=0)
        ax.set_title(f"{title}, {args.bits} bits: {len(levels)} levels")
        ax.set_xlabel("normalised input v = w / alpha")
        ax.set_ylabel("quantized value")
        ax.set_xlim(-1.05, 1.05)
        ax.set_ylim(-1.05, 1.05)
        ins = ax.inset_axes([0.58, 0.07, 0.38, 0.38])
        vz = np.linspace(0.0, ZOOM, 2001)
        ins.plot(vz, quantize(quant, args.bits, vz), lw=1.2, color="C0")
        ins.plot(vz, vz, lw=0.6, ls="--", color="0.6")
        near = levels[(levels >= 0) & (levels <= ZOOM)]
        ins.plot(near, near, "o", ms=3.5, color="C3")
        ins.set_xlim(0, ZOOM)
        ins.set_ylim(-0.01 * ZOOM / 0.2, ZOOM * 1.05)
        ins.set_title(f"zoom: 0 .. {ZOOM}", fontsize=8)
        ins.tick_params(labelsize=7)
        ax.indicate_inset_zoom(ins, edgecolor="0.4")
    axes.flat[0].legend(loc="upper left", fontsize=8)
    fig.suptitle(f"Normalised {args.bits}-bit weight level sets (golden.levels)")
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
