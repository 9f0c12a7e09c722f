"""Line charts drawn on the server as inline SVG (no script, no chart library): one per field of a device's
history. The page's stylesheet colours them (class names only: the Content-Security-Policy allows no inline
style), and each says in words what it shows, for whoever does not see it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

WIDTH, HEIGHT = 640, 160
LEFT, RIGHT, TOP, BOTTOM = 8, 8, 10, 24  # room inside the frame: time labels below
MAX_POINTS = 320  # more samples than this are averaged per stretch of time


@dataclass
class LineChart:
    field: str
    title: str
    paths: list[str]  # one per unbroken stretch (a gap in the samples breaks the line)
    dots: list[tuple[float, float]]  # stretches of one sample
    low: str
    high: str
    latest: str
    count: int
    since_label: str
    until_label: str
    summary: str
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = WIDTH - RIGHT
    top: int = TOP
    bottom: int = HEIGHT - BOTTOM


def line_chart(
    field: str,
    title: str,
    times: Sequence[datetime],
    values: Sequence[float | None],
    since: datetime,
    until: datetime,
    gap_s: float,
    fmt: Callable[[float], str],
    min_span_s: float = 0,
) -> LineChart | None:
    """A chart of ``values`` at ``times`` up to ``until`` (None where there is no sample), from ``since``
    or, for a shorter history, from its first sample (but over ``min_span_s`` at least); the line breaks
    where samples are more than ``gap_s`` apart. None when there is nothing to draw."""
    points = [(t, v) for t, v in zip(times, values, strict=True) if v is not None]
    if not points:
        return None
    since = max(since, min(points[0][0], until - timedelta(seconds=min_span_s)))
    span = max((until - since).total_seconds(), 1.0)
    if len(points) > MAX_POINTS:
        points = _averaged(points, since, span)
        gap_s = max(gap_s, 2.5 * span / MAX_POINTS)  # neighbouring averages are a stretch apart
    low = min(v for _, v in points)
    high = max(v for _, v in points)
    bottom_value, top_value = (low - 1, high + 1) if low == high else (low, high)
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM

    def xy(t: datetime, v: float) -> tuple[float, float]:
        x = LEFT + plot_w * min(max((t - since).total_seconds() / span, 0.0), 1.0)
        y = TOP + plot_h * (1 - (v - bottom_value) / (top_value - bottom_value))
        return round(x, 1), round(y, 1)

    stretches: list[list[tuple[float, float]]] = []
    previous: datetime | None = None
    for t, v in points:
        if previous is None or (t - previous).total_seconds() > gap_s:
            stretches.append([])
        stretches[-1].append(xy(t, v))
        previous = t
    paths = ["M" + " L".join(f"{x},{y}" for x, y in stretch) for stretch in stretches if len(stretch) > 1]
    dots = [stretch[0] for stretch in stretches if len(stretch) == 1]
    since_label = f"{_span_words(span)} ago"
    latest = fmt(points[-1][1])
    summary = (
        f"{title} over the last {_span_words(span)}: from {fmt(low)} to {fmt(high)}, "
        f"latest {latest} ({len(times)} sample{'' if len(times) == 1 else 's'})"
    )
    return LineChart(
        field=field,
        title=title,
        paths=paths,
        dots=dots,
        low=fmt(low),
        high=fmt(high),
        latest=latest,
        count=len(times),
        since_label=since_label,
        until_label="now",
        summary=summary,
    )


def _averaged(
    points: list[tuple[datetime, float]], since: datetime, span: float
) -> list[tuple[datetime, float]]:
    """At most MAX_POINTS points: the samples of each stretch of time averaged (at its middle sample's
    time)."""
    buckets: dict[int, list[tuple[datetime, float]]] = {}
    for t, v in points:
        index = min(int((t - since).total_seconds() / span * MAX_POINTS), MAX_POINTS - 1)
        buckets.setdefault(index, []).append((t, v))
    out = []
    for index in sorted(buckets):
        group = buckets[index]
        middle = group[len(group) // 2][0]
        out.append((middle, sum(v for _, v in group) / len(group)))
    return out


def _span_words(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{round(seconds / 86400)} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    if seconds >= 60:
        return f"{round(seconds / 60)} min"
    return f"{round(seconds)} s"
