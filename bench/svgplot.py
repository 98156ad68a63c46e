"""A line chart as an SVG document, written by hand (no plotting library needed).

    svg = line_chart([Series("fsync p50", xs, ys), ...], title="...", x_label="...",
                     y_label="...", log_x=True, log_y=True)
    Path("chart.svg").write_text(svg)

Each series is a polyline with a dot per point (NaN and non-positive values on a
log axis are left out), dashed if asked, in a colour of its own; the legend is
on the right. Log axes are ticked at 1, 2 and 5 times the powers of ten inside
the data's range; linear axes at a round step.
"""

import math
from html import escape
from typing import NamedTuple

WIDTH, HEIGHT = 900, 520
LEFT, RIGHT, TOP, BOTTOM = 80, 230, 50, 60
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#7f7f7f")


class Series(NamedTuple):
    label: str
    xs: list[float]
    ys: list[float]
    dashed: bool = False


class Axis:
    """Data value -> pixel along one axis, and where its ticks go."""

    def __init__(self, values: list[float], log: bool, lo_px: float, hi_px: float):
        self.log = log
        lo, hi = min(values), max(values)
        if log:
            lo, hi = 10 ** math.floor(math.log10(lo)), 10 ** math.ceil(math.log10(hi))
        else:
            lo, hi = min(lo, 0.0), hi if hi > lo else lo + 1
        self.lo, self.hi = lo, hi
        self.lo_px, self.hi_px = lo_px, hi_px

    def _t(self, v: float) -> float:
        return math.log10(v) if self.log else v

    def px(self, v: float) -> float:
        f = (self._t(v) - self._t(self.lo)) / (self._t(self.hi) - self._t(self.lo))
        return self.lo_px + f * (self.hi_px - self.lo_px)

    def ticks(self) -> list[float]:
        if self.log:
            out = []
            for e in range(round(math.log10(self.lo)), round(math.log10(self.hi)) + 1):
                out += [m * 10**e for m in (1, 2, 5) if self.lo <= m * 10**e <= self.hi]
            return out
        step = 10 ** math.floor(math.log10((self.hi - self.lo) / 5))
        step *= next(m for m in (1, 2, 5, 10) if (self.hi - self.lo) / (step * m) <= 8)
        return [k * step for k in range(math.ceil(self.lo / step), int(self.hi / step) + 1)]


def _label(v: float) -> str:
    if v >= 1e6 and v % 1e5 == 0:
        return f"{v / 1e6:g}M"
    if v >= 1e3 and v % 100 == 0:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def _usable(v: float, log: bool) -> bool:
    return not math.isnan(v) and (v > 0 or not log)


def line_chart(
    series: list[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    log_x: bool = False,
    log_y: bool = False,
) -> str:
    points = [
        [(x, y) for x, y in zip(s.xs, s.ys, strict=True) if _usable(x, log_x) and _usable(y, log_y)]
        for s in series
    ]
    xs = [x for p in points for x, _ in p]
    ys = [y for p in points for _, y in p]
    if not xs:
        raise ValueError("nothing to plot: every series is empty")
    ax = Axis(xs, log_x, LEFT, WIDTH - RIGHT)
    ay = Axis(ys, log_y, HEIGHT - BOTTOM, TOP)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{WIDTH / 2}" y="24" text-anchor="middle" font-size="15">{escape(title)}</text>',
    ]
    for v in ax.ticks():
        x = ax.px(v)
        out.append(
            f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{HEIGHT - BOTTOM}" stroke="#e5e5e5"/>'
        )
        out.append(
            f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">{_label(v)}</text>'
        )
    for v in ay.ticks():
        y = ay.px(v)
        out.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#e5e5e5"/>'
        )
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_label(v)}</text>')
    out += [
        f'<rect x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" '
        f'height="{HEIGHT - TOP - BOTTOM}" fill="none" stroke="#333"/>',
        f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 18}" text-anchor="middle">'
        f"{escape(x_label)}</text>",
        f'<text transform="translate(20 {(TOP + HEIGHT - BOTTOM) / 2}) rotate(-90)" '
        f'text-anchor="middle">{escape(y_label)}</text>',
    ]
    for i, (s, pts) in enumerate(zip(series, points, strict=True)):
        colour = COLOURS[i % len(COLOURS)]
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        coords = " ".join(f"{ax.px(x):.1f},{ay.px(y):.1f}" for x, y in pts)
        if pts:
            out.append(
                f'<polyline points="{coords}" fill="none" stroke="{colour}" '
                f'stroke-width="2"{dash}/>'
            )
        out += [
            f'<circle cx="{ax.px(x):.1f}" cy="{ay.px(y):.1f}" r="3" fill="{colour}"/>'
            for x, y in pts
        ]
        ly = TOP + 10 + 20 * i
        lx = WIDTH - RIGHT + 15
        out.append(
            f'<line x1="{lx}" y1="{ly}" x2="{lx + 28}" y2="{ly}" stroke="{colour}" '
            f'stroke-width="2"{dash}/>'
        )
        out.append(f'<text x="{lx + 34}" y="{ly + 4}">{escape(s.label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
