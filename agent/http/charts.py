"""Small inline SVG charts for the monitoring page, drawn on the server: no script, no
external resource (the page's Content-Security-Policy allows neither), no style attribute."""

from __future__ import annotations

from html import escape

from markupsafe import Markup

WIDTH, HEIGHT = 520, 180
_LEFT, _RIGHT, _TOP, _BOTTOM = 36, 8, 10, 34


def _frame(label: str, body: list[str], y_max_text: str) -> Markup:
    plot_bottom = HEIGHT - _BOTTOM
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'aria-label="{escape(label)}" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
        f'height="{HEIGHT}">',
        f"<title>{escape(label)}</title>",
        f'<line x1="{_LEFT}" y1="{plot_bottom}" x2="{WIDTH - _RIGHT}" y2="{plot_bottom}" '
        f'stroke="#888" stroke-width="1"/>',
        f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{plot_bottom}" stroke="#888" '
        f'stroke-width="1"/>',
        f'<text x="{_LEFT - 4}" y="{_TOP + 8}" text-anchor="end" font-size="10" '
        f'fill="#444">{escape(y_max_text)}</text>',
        f'<text x="{_LEFT - 4}" y="{plot_bottom}" text-anchor="end" font-size="10" '
        f'fill="#444">0</text>',
        *body,
        "</svg>",
    ]
    return Markup("".join(parts))  # noqa: S704 - every text above is escaped


def bar_chart(label: str, bars: list[tuple[str, int]], *, every: int = 1) -> Markup:
    """Vertical bars (``(x label, count)``); x labels on every ``every``-th bar."""
    plot_w = WIDTH - _LEFT - _RIGHT
    plot_h = HEIGHT - _TOP - _BOTTOM
    top = max((count for _, count in bars), default=0) or 1
    step = plot_w / max(len(bars), 1)
    body: list[str] = []
    for i, (name, count) in enumerate(bars):
        h = plot_h * count / top
        x = _LEFT + i * step
        y = _TOP + plot_h - h
        body.append(
            f'<rect x="{x + step * 0.1:.1f}" y="{y:.1f}" width="{step * 0.8:.1f}" '
            f'height="{h:.1f}" fill="#3b6ea8"><title>{escape(name)}: {count}</title></rect>'
        )
        if i % every == 0:
            body.append(
                f'<text x="{x + step / 2:.1f}" y="{HEIGHT - _BOTTOM + 14}" '
                f'text-anchor="middle" font-size="9" fill="#444">{escape(name)}</text>'
            )
    return _frame(label, body, str(top))


def interval_chart(label: str, points: list[tuple[str, float, float, float]]) -> Markup:
    """Points with 95 % interval whiskers on a 0-1 scale (``(x label, estimate, low, high)``)."""
    plot_w = WIDTH - _LEFT - _RIGHT
    plot_h = HEIGHT - _TOP - _BOTTOM
    step = plot_w / max(len(points), 1)

    def y_of(value: float) -> float:
        return _TOP + plot_h * (1 - value)

    body: list[str] = []
    for i, (name, estimate, low, high) in enumerate(points):
        x = _LEFT + i * step + step / 2
        body.append(
            f'<line x1="{x:.1f}" y1="{y_of(low):.1f}" x2="{x:.1f}" y2="{y_of(high):.1f}" '
            f'stroke="#3b6ea8" stroke-width="2"/>'
        )
        body.append(
            f'<circle cx="{x:.1f}" cy="{y_of(estimate):.1f}" r="4" fill="#1d3f66">'
            f"<title>{escape(name)}: {estimate:.3f} ({low:.3f}-{high:.3f})</title></circle>"
        )
        body.append(
            f'<text x="{x:.1f}" y="{HEIGHT - _BOTTOM + 14}" text-anchor="middle" '
            f'font-size="9" fill="#444">{escape(name)}</text>'
        )
    return _frame(label, body, "1")
