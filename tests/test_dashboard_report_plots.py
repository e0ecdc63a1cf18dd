"""The report's plots, as the dashboard's reports page shows them: legends outside the axes (never over a bar,
a line or a point, never cut off), whole steps on the loss plot, no negative dollars.

The figures are the ones ``write_report`` renders (``tunewise.eval.report``'s ``*_figure`` functions), drawn by
matplotlib's Agg renderer and measured in display coordinates.
"""

from __future__ import annotations

import pytest

from test_decide import BASE, FT, METRICS_CSV, build_run, kinds
from tunewise.eval import decide, read_metrics_csv
from tunewise.eval import report as R


@pytest.fixture
def decision(tmp_path):
    # The fine-tuned candidate at 95-100%: its bars reach the top, where a legend inside the axes would sit.
    n = 40
    run = build_run(tmp_path, {"base": {**BASE, "kinds": kinds(n, 0.45, 0.35, seed=1)},
                               "ft": {**FT, "kinds": ["right"] * 38 + ["content"] * 2}}, n)
    (tmp_path / "m.csv").write_text(METRICS_CSV)
    return decide(run, calls_per_month=50_000, training_cost=3.0, metrics_csv=tmp_path / "m.csv")


def _boxes(fig):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (legend,) = fig.legends
    ax = fig.axes[0]
    return renderer, legend.get_window_extent(renderer), ax


def _assert_legend_clear(fig, artists):
    renderer, legend, ax = _boxes(fig)
    plot = ax.get_window_extent(renderer)
    assert not legend.overlaps(plot), f"legend {legend} overlaps the axes {plot}"
    for artist in artists:
        box = artist.get_window_extent(renderer)
        assert not legend.overlaps(box), f"legend {legend} covers {artist}"
    page = fig.bbox
    assert page.x0 <= legend.x0 and legend.x1 <= page.x1 and page.y0 <= legend.y0 and legend.y1 <= page.y1, \
        f"legend {legend} is cut off by the figure {page}"


def test_quality_legend_is_outside_the_bars(decision):
    fig = R.quality_figure(decision)
    try:
        bars = [p for p in fig.axes[0].patches]
        assert len(bars) == 4  # two metrics x two candidates
        assert max(b.get_height() for b in bars) >= 95  # the fine-tuned bars reach the top
        _assert_legend_clear(fig, bars)
        labels = [t.get_text() for t in fig.legends[0].get_texts()]
        assert labels == ["schema adherence", "exact match"]
    finally:
        R._pyplot().close(fig)


def test_loss_legend_is_outside_the_curves_and_steps_are_whole(decision, tmp_path):
    (tmp_path / "m.csv").write_text(METRICS_CSV)
    fig = R.loss_figure(read_metrics_csv(tmp_path / "m.csv"))
    try:
        ax = fig.axes[0]
        _assert_legend_clear(fig, ax.lines)
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    finally:
        R._pyplot().close(fig)


def test_cost_legend_is_outside_the_lines(decision):
    fig = R.cost_figure(decision)
    try:
        ax = fig.axes[0]
        assert len(ax.lines) >= 3  # base, fine-tuned, your volume (and the break-even star)
        _assert_legend_clear(fig, ax.lines)
    finally:
        R._pyplot().close(fig)


def test_an_unpriced_cost_plot_does_not_show_negative_dollars(tmp_path):
    n = 10
    run = build_run(tmp_path, {"base": {"model": "smollm2-135m-instruct", "input_tokens": 300, "kinds": ["format"] * n},
                               "ft": {"model": "ft:smollm2-135m-instruct:p::x", "input_tokens": 50,
                                      "kinds": ["right"] * n}}, n, schema=None)
    fig = R.cost_figure(decide(run))
    try:
        ax = fig.axes[0]
        assert ax.get_ylim()[0] >= 0
        assert any("$0" in t.get_text() for t in ax.texts)
        _assert_legend_clear(fig, ax.lines)
    finally:
        R._pyplot().close(fig)
