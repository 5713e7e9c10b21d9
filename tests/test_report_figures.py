"""The report's figures read back: every figure is drawn from stored columns only, and what it
draws (matplotlib artists' data, found by their gid) is checked against the rows it was given.

Covered: Q(w) with its intervals, one-sided intervals drawn as lower bounds with an arrow (not
error bars), the exact grid Q with its error bar, the pooled curve, legends off the axes at a
readable size, settings split into rows of panels; Q per model; the fraction outside the
support with Clopper-Pearson bars; the guidance-effect profile's band and its legend that
reconciles start - total with the direct Q; the sample grid of image-like samples (the same row
in every column); the judge's reliability diagrams; the glossary and the tables' blank cells.
"""

from __future__ import annotations

import io
import json
import math
import re

import numpy as np
import pytest
import torch
from PIL import Image

from guidelab.exact import DecreaseProfile
from guidelab.report.figures import (
    image_layout,
    reliability_figure,
    sample_cells,
    sample_grid_figure,
    sample_mosaic,
)
from guidelab.report.glossary import glossary_html, glossary_terms
from guidelab.report.plots import (
    GRID_LABEL,
    LOWER_BOUND_LABEL,
    figure_png,
    plot_q_vs_w,
    q_by_setting_figure,
    q_vs_w_figure,
    support_figure,
)
from guidelab.report.profile import profile_figure, profile_label
from guidelab.report.tables import MAX_COLUMNS, class_table

pytestmark = pytest.mark.usefixtures("one_thread")


def _rows() -> list[dict]:
    """Two classes x three strengths; class 0 at w = 0 and w = 1 has a one-sided interval,
    the grid Q exists at w = 0 and w = 4 only, and a pooled row per w."""
    rows = []
    for c in (0, 1):
        for w, q in ((0.0, 2.2), (1.0, 1.5), (4.0, 1.1)):
            one_sided = c == 0 and w < 4
            rows.append({"class": c, "w": w, "sampler": "ddpm_type", "q_mean": q + 0.1 * c,
                         "q_low": q - 0.3, "q_high": math.inf if one_sided else q + 0.2,
                         "q_reliable": not one_sided, "p_mean": 1 / q, "inv_prior": 2.0,
                         "level": 0.95,
                         "grid_q": (2.0 - 0.2 * w + c) if w != 1.0 else None,
                         "grid_q_err": 0.05 * (1 + c) if w != 1.0 else None})
    for w, q in ((0.0, 2.0), (1.0, 1.6), (4.0, 1.15)):
        rows.append({"class": "all", "w": w, "sampler": "ddpm_type", "q_mean": q,
                     "q_low": q - 0.1, "q_high": q + 0.1, "q_reliable": True,
                     "p_mean": 1 / q, "inv_prior": 2.0})
    rows.append({"class": 0, "w": 0.0, "sampler": "exact_reverse", "q_mean": 2.05,
                 "q_low": 1.9, "q_high": 2.2, "q_reliable": True})
    return rows


def _by_gid(fig, prefix: str) -> dict:
    """gid -> artist, over every artist of the figure."""
    return {a.get_gid(): a for a in fig.findobj(lambda a: isinstance(a.get_gid(), str)
                                                and a.get_gid().startswith(prefix))}


def _legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def _check_legends_off_the_axes(fig) -> None:
    """Every figure-level legend lies outside every axes' box, at a readable size."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [ax.get_window_extent(renderer) for ax in fig.axes if ax.get_visible()]
    assert fig.legends
    for legend in fig.legends:
        box = legend.get_window_extent(renderer)
        assert not any(box.overlaps(a) for a in boxes), (box, boxes)
        assert all(t.get_fontsize() >= 9 for t in legend.get_texts())
        assert box.x0 >= 0 and box.x1 <= fig.bbox.width + 1  # inside the saved image


def test_one_sided_interval_is_a_lower_bound_with_an_arrow():
    rows = _rows()
    fig = q_vs_w_figure(rows)
    ax_q = fig.axes[0]
    # the lower bounds: a tick at q_low for each one-sided row, and an upward arrow there
    ticks = _by_gid(fig, "q-lower:class 0")["q-lower:class 0"]
    one_sided = [r for r in rows if r["class"] == 0 and r.get("q_high") == math.inf]
    assert ticks.get_xydata().tolist() == [[r["w"], r["q_low"]] for r in one_sided]
    arrows = [t for t in ax_q.texts if t.get_gid() == "q-lower-arrow:class 0"]
    assert sorted(a.xy for a in arrows) == sorted((r["w"], r["q_low"]) for r in one_sided)
    for arrow in arrows:
        assert arrow.arrow_patch is not None
        assert arrow.get_anncoords() == "offset points" and arrow.xyann[1] > 0  # upward
        assert arrow.arrowprops["arrowstyle"] == "<|-"  # the head at the upper end
    # no error bar for a one-sided interval: the bars of class 0 are the bounded row only
    bars = _by_gid(fig, "q-bar:class 0")["q-bar:class 0"]
    segments = [seg.tolist() for seg in bars.get_segments()]
    bounded = [r for r in rows if r["class"] == 0 and r.get("q_high") != math.inf
               and r["sampler"] != "exact_reverse"]
    assert segments == [[[r["w"], r["q_low"]], [r["w"], r["q_high"]]] for r in bounded]
    assert LOWER_BOUND_LABEL == "lower bound only (heavy tail)"
    assert LOWER_BOUND_LABEL in _legend_texts(fig)
    _check_legends_off_the_axes(fig)
    figure_png(fig)


def test_q_figure_draws_the_exact_grid_and_the_pooled_curve():
    rows = _rows()
    fig = q_vs_w_figure(rows)
    for c in (0, 1):
        grid = _by_gid(fig, f"q-grid:class {c}")[f"q-grid:class {c}"]
        expected = [r for r in rows if r["class"] == c and r.get("grid_q") is not None
                    and r["sampler"] != "exact_reverse"]
        assert grid.get_xydata().tolist() == [[r["w"], r["grid_q"]] for r in expected]
        # its error bar is grid_q +- grid_q_err
        container = next(cont for cont in fig.axes[0].containers if cont.lines[0] is grid)
        segments = container.lines[2][0].get_segments()
        for seg, r in zip(segments, expected, strict=True):
            assert seg[:, 1].tolist() == pytest.approx([r["grid_q"] - r["grid_q_err"],
                                                         r["grid_q"] + r["grid_q_err"]])
    assert any(GRID_LABEL in text for text in _legend_texts(fig))
    pooled = _by_gid(fig, "q-mc:all classes (pooled)")["q-mc:all classes (pooled)"]
    assert pooled.get_xydata().tolist() == [[r["w"], r["q_mean"]] for r in rows
                                            if r["class"] == "all"]
    assert "all classes (pooled)" in _legend_texts(fig)
    p_line = _by_gid(fig, "p-mc:class 1")["p-mc:class 1"]
    assert p_line.get_ydata().tolist() == pytest.approx(
        [r["p_mean"] for r in rows if r["class"] == 1])
    # the exact reverse kernel's row is an open square at w = 0
    ref = _by_gid(fig, "q-ref:class 0")["q-ref:class 0"]
    assert ref.get_xydata().tolist() == [[0.0, 2.05]]
    # without grid columns there is no grid artist and no grid legend entry
    plain = q_vs_w_figure([{k: v for k, v in r.items() if not k.startswith("grid")}
                           for r in rows])
    assert not _by_gid(plain, "q-grid") and not any(GRID_LABEL in t
                                                    for t in _legend_texts(plain))


def test_plot_q_vs_w_draws_each_setting_in_its_own_row(tmp_path):
    rows = [dict(r, sampler=s) for r in _rows() if r["sampler"] != "exact_reverse"
            for s in ("ddpm_type", "ddim")]
    fig = q_vs_w_figure(rows)
    assert len(fig.axes) == 4  # two rows of (Q, E[p]) panels
    titles = [ax.get_title() for ax in fig.axes]
    assert any("sampler = ddim" in t for t in titles) and any("ddpm_type" in t for t in titles)
    path = plot_q_vs_w(rows, tmp_path / "q_vs_w.png", title="two samplers")
    with Image.open(path) as image:
        image.load()
        assert image.size[0] > 1000


def test_q_per_model_has_one_curve_per_model():
    groups = []
    for name, shift in (("exact", 0.0), ("trained (mlp)", 0.5)):
        rows = [dict(r, q_mean=r["q_mean"] + shift) for r in _rows()
                if r["sampler"] != "exact_reverse"]
        groups.append((name, rows))
    fig = q_by_setting_figure(groups)
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 3  # class 0, class 1, all
    for name, rows in groups:
        for c in (0, 1, "all"):
            label = "all classes (pooled)" if c == "all" else f"class {c}"
            line = _by_gid(fig, f"q-mc:{name} / {label}")[f"q-mc:{name} / {label}"]
            assert line.get_ydata().tolist() == [r["q_mean"] for r in rows if r["class"] == c]
    assert {"exact", "trained (mlp)"} <= set(_legend_texts(fig))
    _check_legends_off_the_axes(fig)


def test_support_figure_draws_the_fraction_outside_with_clopper_pearson_bars():
    from guidelab.metrics.support import clopper_pearson

    groups = []
    for eps, kind in ((0.0, "bias"), (0.1, "noise")):
        rows = []
        for c in (0, 1, "all"):
            for w in (0.0, 1.0, 4.0):
                m = int(10 * eps * (1 + w))
                low, high = clopper_pearson(m, 100)
                rows.append({"class": c, "w": w, "outside": m / 100, "outside_low": low,
                             "outside_high": high})
        groups.append((f"eps = {eps:g}, perturbation = {kind}", rows))
    fig = support_figure(groups)
    for label, rows in groups:
        gid = f"outside:{label} / class 1"
        line = _by_gid(fig, gid)[gid]
        mine = [r for r in rows if r["class"] == 1]
        assert line.get_ydata().tolist() == [r["outside"] for r in mine]
        container = next(cont for ax in fig.axes for cont in ax.containers
                         if cont.lines[0] is line)
        for seg, r in zip(container.lines[2][0].get_segments(), mine, strict=True):
            assert seg[:, 1].tolist() == pytest.approx([r["outside_low"], r["outside_high"]])
    _check_legends_off_the_axes(fig)


def _profile(c: int, method: str) -> DecreaseProfile:
    """A hand-made profile: levels, an integrand and its standard errors."""
    times = torch.linspace(3.0, 0.03, 40, dtype=torch.float64)
    alphas = torch.exp(-times)
    sigmas = torch.sqrt(1 - alphas**2)
    integrand = torch.exp(-((torch.log(sigmas)) ** 2) * 4) + 0.01 * c
    se = 0.05 * integrand if method == "paths" else torch.zeros_like(integrand)
    return DecreaseProfile(times=times, step_sizes=torch.full_like(times, 0.075),
                           alphas=alphas, sigmas=sigmas, integrand=integrand,
                           integrand_se=se, total=0.6 + 0.1 * c, total_se=0.02, start=2.0,
                           start_se=0.0, formula_q=2.0 - 2 * 0.6, direct_q=0.85,
                           direct_q_se=0.03, difference=0.05, difference_se=0.04,
                           inv_prior=2.0, w=1.0, c=c, method=method,
                           n_paths=256 if method == "paths" else 0, num_steps=40)


def test_profile_band_is_two_standard_errors_and_the_legend_reconciles():
    profiles = [_profile(0, "paths"), _profile(1, "paths")]
    fig = profile_figure(profiles)
    ax = fig.axes[0]
    assert len(ax.lines) == 2
    for profile, line, band in zip(profiles, ax.lines, ax.collections, strict=True):
        scale = 2 * profile.w * (profile.sigmas**2 / profile.alphas**2)
        curve = (scale * profile.integrand).numpy()
        assert line.get_ydata() == pytest.approx(curve)
        vertices = band.get_paths()[0].vertices
        upper = (curve + 2 * (scale * profile.integrand_se).numpy())
        assert vertices[:, 1].max() == pytest.approx(upper.max())
        text = profile_label(profile)
        total = 2 * profile.w * profile.total
        assert f"total {total:.4g} \u00b1 {2 * 2 * profile.w * profile.total_se:.2g} (2 se)" \
            in text
        assert f"formula Q {profile.formula_q:.4g}" in text
        assert f"direct Q {profile.direct_q:.4g}" in text
        assert f"difference {profile.difference:+.3g} \u00b1 {profile.difference_se:.2g}" \
            in text
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [profile_label(p)
                                                                  for p in profiles]
    _check_legends_off_the_axes(fig)
    # a grid profile has no Monte Carlo error: no band, and the legend says so
    grid = profile_figure([_profile(0, "grid")])
    assert not grid.axes[0].collections
    assert "no Monte Carlo error" in grid.legends[0].get_texts()[0].get_text()
    # the stored JSON round trip gives the same legend
    again = DecreaseProfile.from_dict(json.loads(json.dumps(profiles[0].to_dict())))
    assert profile_label(again) == profile_label(profiles[0])


def _image_samples(size: int) -> dict:
    """Samples of 2 classes x 2 strengths, rows shuffled in the file: pixel j of row r of
    class c at w is c + 10 w + 100 r + j / size (so every value says where it came from)."""
    out = {"unit_id": [], "class": [], "w": [], "sampler": [], "row": []}
    out.update({f"x{j}": [] for j in range(size)})
    order = [(c, w, r) for c in (0, 1) for w in (0.0, 2.0) for r in (3, 0, 2, 1, 4)]
    for c, w, r in order:
        out["unit_id"].append(f"u{c}")
        out["class"].append(c)
        out["w"].append(w)
        out["sampler"].append("ddpm_type")
        out["row"].append(r)
        for j in range(size):
            out[f"x{j}"].append(c + 10 * w + 100 * r + j / size)
    return out


@pytest.mark.parametrize("size", [64, 48])
def test_sample_grid_puts_the_same_row_in_every_column(size):
    samples = _image_samples(size)
    classes, strengths, cells, rows = sample_cells(samples, per_cell=3)
    assert classes == [0, 1] and strengths == [0.0, 2.0]
    assert rows == {0: [0, 1, 2], 1: [0, 1, 2]}
    h, w, ch = image_layout(size)
    assert (h, w, ch) == ((8, 8, 1) if size == 64 else (4, 4, 3))
    mosaic, geometry = sample_mosaic(cells, classes, strengths)
    for (c, s, i), (top, left) in geometry["origin"].items():
        tile = mosaic[top:top + h, left:left + w]
        pixels = np.array([c + 10 * s + 100 * rows[c][i] + j / size for j in range(size)])
        image = pixels.reshape(ch, h, w).transpose(1, 2, 0) if ch == 3 else pixels.reshape(h, w)
        assert tile == pytest.approx(image)
    # position i of every column group is row i of the unit: the same noise
    for c in classes:
        for i in range(3):
            tops = {geometry["origin"][(c, s, i)][0] for s in strengths}
            assert len(tops) == 1
    fig = sample_grid_figure(cells, classes, strengths, title="CFG (classifier-free guidance)")
    shown = next(im for ax in fig.axes for im in ax.get_images() if im.get_gid() == "samples")
    drawn = shown.get_array()
    if ch == 1:  # the raw values, the gaps masked (drawn white)
        gaps = np.isnan(mosaic)
        assert np.array_equal(np.ma.getmaskarray(drawn), gaps)
        assert np.ma.getdata(drawn)[~gaps] == pytest.approx(mosaic[~gaps])
    else:  # colour: scaled to [0, 1] on one scale, channels last, gaps white
        assert drawn.shape == mosaic.shape and np.nanmin(drawn) >= 0 and np.nanmax(drawn) <= 1
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["class 0", "class 1"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["w = 0", "w = 2"]
    assert all(t.get_fontsize() >= 9 for t in ax.get_yticklabels() + ax.get_xticklabels())
    with Image.open(io.BytesIO(figure_png(fig))) as image:
        image.load()


def test_reliability_figure_reads_the_calibration_json():
    from guidelab.metrics.calibration import calibration_summary

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(300, 4)) * 2
    labels = rng.integers(0, 4, size=300)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    data = json.loads(json.dumps(calibration_summary(log_p, labels, bins=10)))
    fig = reliability_figure(data)
    for kind in ("top", "classwise"):
        line = _by_gid(fig, f"reliability:{kind}")[f"reliability:{kind}"]
        table = data[f"reliability_{kind}"]
        used = [i for i, n in enumerate(table["count"]) if n > 0]
        assert line.get_xdata().tolist() == pytest.approx([table["confidence"][i] for i in used])
        assert line.get_ydata().tolist() == pytest.approx([table["frequency"][i] for i in used])
    titles = " ".join(ax.get_title() for ax in fig.axes)
    assert f"ECE = {data['ece_top']:.3g}" in titles
    assert f"ECE = {data['ece_classwise']:.3g}" in titles


def test_glossary_defines_every_column_shown():
    columns = {"q_mean", "q_low", "q_high", "interval_method", "pareto_khat", "khat_threshold",
               "q_top_share", "p_mean", "p_q01", "accuracy", "frac_p_decreased", "grid_q",
               "grid_q_err", "entropy", "kl", "dom_verdict", "dom_quantile", "sign_n_up",
               "ece_top", "ece_classwise", "real_q", "outside", "score_error",
               "training_loss", "profile_total"}
    names = " | ".join(term.name for term in glossary_terms(columns))
    for name in ("Q", "interval", "interval method", "k-hat", "k-hat threshold", "top share",
                 "E[p]", "p quantiles", "accuracy", "p down", "grid_q", "grid_q_err",
                 "entropy (nats)", "KL (nats)", "dominance", "q*", "sign test", "ECE",
                 "real_q", "outside", "score error", "training loss", "profile total"):
        assert name in names, name
    text = glossary_html(columns)
    assert text.startswith('<dl class="glossary">') and "nats" in text
    # a study without exact grids does not get their entries
    assert "grid_q_err" not in " ".join(t.name for t in glossary_terms({"q_mean"}))


def test_class_tables_are_narrow_and_leave_missing_values_blank():
    rows = []
    for w in (0.0, 1.0):
        rows.append({"class": 0, "w": w, "n": 10, "q_mean": 1.5, "q_low": 1.2, "q_high": 1.8,
                     "q_reliable": True, "pareto_khat": float("nan"), "p_mean": 0.7,
                     "accuracy": 0.8, "frac_p_decreased": 0.0 if w == 0 else 0.1,
                     "grid_q": None, "dom_verdict": "undecided", "sign_p_value": 0.5,
                     **{f"extra_{i}": float(i) for i in range(30)}})
    text = class_table(rows)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", text)
    assert cells and not [c for c in cells if c.strip().lower() in ("nan", "none", "\u2014")]
    # k-hat NaN, and the comparisons with w = 0 at w = 0, are blank cells
    first = re.search(r"<tbody><tr[^>]*>(.*?)</tr>", text).group(1)
    assert re.findall(r"<td[^>]*>(.*?)</td>", first)[0] == "0"  # w
    assert "k-hat" not in text.split("<details")[0] or "<td></td>" in first
    heads = re.findall(r"<th[^>]*>(.*?)</th>", text.split("</thead>")[0])
    row0 = re.findall(r"<td[^>]*>(.*?)</td>", first)
    for head in ("p down", "dominance"):
        if head in heads:
            assert row0[heads.index(head)] == "", head
    for chunk in text.split("<table")[1:]:
        assert len(re.findall(r"<th[ >]", chunk.split("</thead>")[0])) <= MAX_COLUMNS
    assert "<details" in text and "extra_29" in text
