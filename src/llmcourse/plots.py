"""One visual style for every figure in the course.

Colours come from the Okabe-Ito palette, which stays distinguishable for the common forms of
colour blindness; lines also differ in dash pattern, so no figure relies on colour alone.
Fonts are sized to stay readable when a figure is shown on a slide.
"""
from __future__ import annotations

import matplotlib as mpl
from cycler import cycler

# Okabe & Ito (2008), "Color Universal Design".
PALETTE = {
    "blue": "#0072B2",
    "orange": "#E69F00",
    "green": "#009E73",
    "vermillion": "#D55E00",
    "sky": "#56B4E9",
    "purple": "#CC79A7",
    "yellow": "#F0E442",
    "black": "#000000",
}
LINESTYLES = ["-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (8, 2))]


def use_course_style() -> None:
    """Apply the course's matplotlib style (palette, dash cycle, readable sizes)."""
    mpl.rcParams.update({
        "figure.figsize": (7.5, 4.2),
        "figure.dpi": 100,
        "savefig.dpi": 150,
        "savefig.bbox": "tight",
        "font.size": 12,
        "axes.titlesize": 13,
        "axes.labelsize": 12,
        "xtick.labelsize": 11,
        "ytick.labelsize": 11,
        "legend.fontsize": 11,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "lines.linewidth": 2.0,
        "axes.prop_cycle": cycler(color=list(PALETTE.values())) + cycler(linestyle=LINESTYLES),
        "image.cmap": "viridis",
    })
