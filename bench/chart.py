"""The results as an SVG bar chart (no plotting dependency): our CPU time per request ÷ the
ceiling's per scenario (lower is better), median with its min–max, against the hot reads' target."""

from __future__ import annotations

from html import escape
from typing import Any

WIDTH, ROW, LEFT, RIGHT, TOP = 760, 34, 220, 40, 70
# The hot reads' target (#24): at most this × the ceiling's CPU per request.
HOT_READ_TARGET = 1.4
SCALE_MAX = 4.0


def render(document: dict[str, Any]) -> str:
    rows = [s for s in document["scenarios"] if s.get("cpu_ratio_to_ceiling") is not None]
    height = TOP + ROW * len(rows) + 60
    scale = (WIDTH - LEFT - RIGHT) / SCALE_MAX

    def x(value: float) -> float:
        return LEFT + min(max(value, 0.0), SCALE_MAX) * scale

    machine = document["machine"]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        '<text x="10" y="20" font-size="14" font-weight="bold">Goaltrack\'s CPU µs per request '
        "÷ the ceiling's (same SQL, PostgreSQL writes the JSON); lower is better</text>",
        f'<text x="10" y="38" fill="#555">{escape(machine["platform"])}, {machine["cpus"]} CPUs, '
        f"Python {machine['python']}; git {escape(document['git'])}; "
        f"{document['config']['repetitions']} repetitions, median with min–max</text>",
    ]
    for value in (0.0, 1.0, 2.0, 3.0, 4.0):
        parts.append(
            f'<line x1="{x(value):.1f}" y1="{TOP - 10}" x2="{x(value):.1f}" '
            f'y2="{TOP + ROW * len(rows)}" stroke="#ddd"/>'
            f'<text x="{x(value):.1f}" y="{TOP + ROW * len(rows) + 16}" text-anchor="middle" '
            f'fill="#555">{value:.1f}</text>'
        )
    for index, scenario in enumerate(rows):
        y = TOP + index * ROW
        low, high = scenario["cpu_ratio_to_ceiling_range"]
        median = scenario["cpu_ratio_to_ceiling"]
        colour = "#9e9e9e"  # writes: their target is a throughput on the durable server
        if scenario["hot_read"]:
            colour = "#2e7d32" if median <= HOT_READ_TARGET else "#c62828"
            parts.append(
                f'<line x1="{x(HOT_READ_TARGET):.1f}" y1="{y + 2}" x2="{x(HOT_READ_TARGET):.1f}" '
                f'y2="{y + 26}" stroke="#1565c0" stroke-dasharray="3,2"/>'
            )
        parts += [
            f'<text x="{LEFT - 8}" y="{y + 17}" text-anchor="end">{escape(scenario["name"])}</text>',
            f'<rect x="{LEFT}" y="{y + 5}" width="{x(median) - LEFT:.1f}" height="18" '
            f'fill="{colour}" opacity="0.75"/>',
            f'<line x1="{x(low):.1f}" y1="{y + 14}" x2="{x(high):.1f}" y2="{y + 14}" '
            f'stroke="black" stroke-width="2"/>',
            f'<text x="{max(x(median), x(high)) + 6:.1f}" y="{y + 17}">{median:.2f}</text>',
        ]
    parts.append(
        f'<text x="10" y="{height - 12}" fill="#555">Dashed: the hot reads\' target '
        f"(≤ {HOT_READ_TARGET} ×). Green meets it, red does not; grey: writes.</text>"
    )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
