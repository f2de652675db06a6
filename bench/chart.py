"""The results as an SVG bar chart (no plotting dependency): our throughput ÷ the ceiling's per
scenario, median with its min–max, against the targets."""

from __future__ import annotations

from html import escape
from typing import Any

WIDTH, ROW, LEFT, RIGHT, TOP = 760, 34, 200, 40, 70


def render(document: dict[str, Any]) -> str:
    rows = [s for s in document["scenarios"] if s.get("ratio_to_ceiling") is not None]
    height = TOP + ROW * len(rows) + 60
    scale = (WIDTH - LEFT - RIGHT) / 1.0  # ratios 0..1

    def x(value: float) -> float:
        return LEFT + min(max(value, 0.0), 1.0) * scale

    machine = document["machine"]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        '<text x="10" y="20" font-size="14" font-weight="bold">Goaltrack ÷ ceiling '
        "(Starlette + raw asyncpg + orjson, same SQL and JSON), req/s</text>",
        f'<text x="10" y="38" fill="#555">{escape(machine["platform"])}, {machine["cpus"]} CPUs, '
        f"Python {machine['python']}; git {escape(document['git'])}; "
        f"{document['config']['repetitions']} repetitions, median with min–max</text>",
    ]
    for value in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(
            f'<line x1="{x(value):.1f}" y1="{TOP - 10}" x2="{x(value):.1f}" '
            f'y2="{TOP + ROW * len(rows)}" stroke="#ddd"/>'
            f'<text x="{x(value):.1f}" y="{TOP + ROW * len(rows) + 16}" text-anchor="middle" '
            f'fill="#555">{value:.2f}</text>'
        )
    for index, scenario in enumerate(rows):
        y = TOP + index * ROW
        target = 0.5 if scenario["hot_read"] else 0.3
        low, high = scenario["ratio_to_ceiling_range"]
        median = scenario["ratio_to_ceiling"]
        colour = "#2e7d32" if median >= target else "#c62828"
        parts += [
            f'<text x="{LEFT - 8}" y="{y + 17}" text-anchor="end">{escape(scenario["name"])}</text>',
            f'<rect x="{LEFT}" y="{y + 5}" width="{x(median) - LEFT:.1f}" height="18" '
            f'fill="{colour}" opacity="0.75"/>',
            f'<line x1="{x(low):.1f}" y1="{y + 14}" x2="{x(high):.1f}" y2="{y + 14}" '
            f'stroke="black" stroke-width="2"/>',
            f'<line x1="{x(target):.1f}" y1="{y + 2}" x2="{x(target):.1f}" y2="{y + 26}" '
            f'stroke="#1565c0" stroke-dasharray="3,2"/>',
            f'<text x="{max(x(median), x(high)) + 6:.1f}" y="{y + 17}">{median:.2f}</text>',
        ]
    parts.append(
        f'<text x="10" y="{height - 12}" fill="#555">Dashed: target (0.5 × for hot reads, '
        f"0.3 × for writes). Green meets it, red does not.</text>"
    )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
