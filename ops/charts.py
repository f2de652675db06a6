"""Plain SVG line charts, written by hand (no plotting dependency): x is seconds into the run,
one or two y axes, a legend, and optional vertical markers (the chaos run's faults)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

WIDTH, HEIGHT = 860, 340
LEFT, RIGHT, TOP, BOTTOM = 64, 64, 36, 64
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf")


@dataclass
class Series:
    label: str
    points: list[tuple[float, float | None]]
    right_axis: bool = False
    dashed: bool = False


@dataclass
class Chart:
    title: str
    y_label: str
    series: list[Series]
    y2_label: str = ""
    x_label: str = "seconds into the run"
    markers: list[tuple[float, str]] = field(default_factory=list)
    hlines: list[tuple[float, str]] = field(default_factory=list)  # on the left axis

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.render())

    def render(self) -> str:
        xs = [x for s in self.series for x, y in s.points if y is not None]
        x_max = max(xs, default=1.0) or 1.0
        left = [y for s in self.series if not s.right_axis for _, y in s.points if y is not None]
        right = [y for s in self.series if s.right_axis for _, y in s.points if y is not None]
        y_max = _nice(max([*left, *(v for v, _ in self.hlines)], default=1.0))
        y2_max = _nice(max(right, default=1.0))
        plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

        def sx(x: float) -> float:
            return LEFT + plot_w * x / x_max

        def sy(y: float, top: float) -> float:
            return TOP + plot_h * (1 - y / top)

        out = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
            f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">',
            f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
            f'<text x="{WIDTH / 2}" y="18" text-anchor="middle" font-size="14">'
            f"{escape(self.title)}</text>",
        ]
        for i in range(6):  # grid and y ticks
            y = TOP + plot_h * i / 5
            out.append(
                f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
            )
            out.append(
                f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                f"{_fmt(y_max * (1 - i / 5))}</text>"
            )
            if right:
                out.append(
                    f'<text x="{WIDTH - RIGHT + 6}" y="{y + 4:.1f}">'
                    f"{_fmt(y2_max * (1 - i / 5))}</text>"
                )
        step = _nice(x_max / 8)
        tick = 0.0
        while tick <= x_max + 1e-9:
            x = sx(tick)
            out.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP + plot_h}" y2="{TOP + plot_h + 4}" '
                'stroke="#333"/>'
            )
            out.append(
                f'<text x="{x:.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">'
                f"{_fmt(tick)}</text>"
            )
            tick += step
        out.append(
            f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" '
            'stroke="#333"/>'
        )
        out.append(
            f'<text x="{LEFT + plot_w / 2}" y="{TOP + plot_h + 31}" text-anchor="middle">'
            f"{escape(self.x_label)}</text>"
        )
        out.append(
            f'<text transform="translate(14 {TOP + plot_h / 2}) rotate(-90)" '
            f'text-anchor="middle">{escape(self.y_label)}</text>'
        )
        if right:
            out.append(
                f'<text transform="translate({WIDTH - 12} {TOP + plot_h / 2}) rotate(90)" '
                f'text-anchor="middle">{escape(self.y2_label)}</text>'
            )
        for value, label in self.hlines:
            y = sy(value, y_max)
            out.append(
                f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                'stroke="#999" stroke-dasharray="2 3"/>'
            )
            out.append(f'<text x="{LEFT + 4}" y="{y - 3:.1f}" fill="#777">{escape(label)}</text>')
        for x_value, label in self.markers:
            x = sx(x_value)
            out.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{TOP + plot_h}" '
                'stroke="#555" stroke-dasharray="4 3"/>'
            )
            out.append(f'<text x="{x + 3:.1f}" y="{TOP + 11}" fill="#555">{escape(label)}</text>')
        for index, s in enumerate(self.series):
            colour = COLOURS[index % len(COLOURS)]
            top = y2_max if s.right_axis else y_max
            for segment in _segments(s.points):
                path = " ".join(f"{sx(x):.1f},{sy(y, top):.1f}" for x, y in segment)
                dash = ' stroke-dasharray="6 3"' if s.dashed else ""
                out.append(
                    f'<polyline points="{path}" fill="none" stroke="{colour}" '
                    f'stroke-width="1.6"{dash}/>'
                )
            lx = LEFT + 8 + 150 * index
            out.append(
                f'<line x1="{lx}" x2="{lx + 18}" y1="{HEIGHT - 12}" y2="{HEIGHT - 12}" '
                f'stroke="{colour}" stroke-width="2"/>'
            )
            suffix = " (right)" if s.right_axis else ""
            out.append(f'<text x="{lx + 22}" y="{HEIGHT - 8}">{escape(s.label + suffix)}</text>')
        out.append("</svg>")
        return "\n".join(out) + "\n"


def _segments(points: list[tuple[float, float | None]]) -> list[list[tuple[float, float]]]:
    """Gaps (None) split the line."""
    segments: list[list[tuple[float, float]]] = [[]]
    for x, y in points:
        if y is None:
            if segments[-1]:
                segments.append([])
        else:
            segments[-1].append((x, y))
    return [s for s in segments if s]


def _nice(value: float) -> float:
    """The next 1, 2, 2.5 or 5 × 10^n at or above `value`."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for factor in (1, 2, 2.5, 5, 10):
        candidate = factor * 10**exponent
        if candidate >= value:
            return float(candidate)
    return float(10 ** (exponent + 1))


def _fmt(value: float) -> str:
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"
