r"""One self-contained HTML page for a study's results folder.

The page summarises what guidance does in a study run by ``guidelab run SPEC --out DIR``. For
each class c and guidance strength w the study measured, on samples Y^w of the guided sampler,

* Q_c(w) = E[1 / p(c | Y^w)] with its interval (the reference value is 1/p(c): exact draws from
  p(x | c) give E[1/p(c|X)] = 1/p(c));
* E[p(c | Y^w)], the accuracy, and the fraction of coupled rows whose p(c|Y) went down against
  w = 0;
* the tail diagnosis of the terms 1/p(c|Y): the Pareto k-hat against its threshold, the share
  of the sum held by the largest 0.1 % of terms, and the interval method it implies (an
  interval whose upper end is infinite is "lower bound only": the mean is not reliable).

Pooled over the classes present, with weights pi_c = p(c) / sum_c' p(c') (p(c) = 1 / inv_prior),
the summary table shows sum_c pi_c Q_c(w), the average of 1/p(c|Y) when c is drawn from the
(restricted) prior; unguided and exact it equals sum_c pi_c / p(c) = C' / sum_c' p(c') for the
C' classes present (C when all are). Its standard error sqrt(sum_c pi_c^2 se_c^2) (classes are
independent units) is shown only when every class's interval is reliable.

For d <= 2 the stored samples are drawn over the class-conditional density: contours of
log p(x | c) on a grid (d = 2) or the curve p(x | c) over a histogram (d = 1), at a few w.

Layout read (the store of :mod:`guidelab.studies.store`): ``DIR/spec.toml`` (the resolved
spec), ``DIR/units/<unit_id>.parquet`` (one row per (unit, w)) and
``DIR/samples/<unit_id>.parquet`` (columns ``unit_id, class, w, sampler, x0[, x1]``). Every
part is optional: a missing column or file leaves its part of the page out with a note, never
an error. Every figure is a PNG made with matplotlib's Agg backend and embedded as a
``data:image/png;base64`` URI; the CSS is inline; the page loads nothing (no script, font,
style sheet or image from anywhere), so it opens from disk with no network. Every string from
the data is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..studies.units import _freeze
from .plots import _number, _pyplot, figure_png, q_vs_w_figure

__all__ = ["write_report", "DensityFn"]

DensityFn = Callable[[np.ndarray, int], np.ndarray]
"""``density(x, c)``: log p(x | c) at points ``x`` ``[N, d]`` (float64) -> ``[N]``."""

REFERENCE_SAMPLER = "exact_reverse"
"""The ``sampler`` of reference rows (the exact reverse kernel at w = 0)."""

MAX_SERIES = 12
"""At most this many settings (combinations of swept keys other than w and class) get figures
and tables; the rest are listed in a note."""
MAX_SCATTER_W = 4
MAX_SCATTER_CLASSES = 10
MAX_PROVENANCE_ROWS = 300
GRID_POINTS = 120
"""Grid points per axis of the density contours (d = 2) or the density curve (d = 1)."""

_PROVENANCE = ("seed", "sampler", "steps", "schedule", "rule", "strength_schedule", "trials",
               "dtype", "device", "guidelab_version")
_P_QUANTILE = re.compile(r"p_q\d\d")
_SERIES_FALLBACK = ("sampler", "schedule", "steps", "seed", "dtype")
_SAMPLER_KEYS = ("sampler", "steps", "schedule")
# Per-class table: (column, header, tooltip). Columns absent from every row are left out.
_CLASS_COLUMNS = (
    ("w", "w", "guidance strength (CFG scale = 1 + w)"),
    ("sampler", "sampler", None),
    ("n", "n", "finite samples"),
    ("q_mean", "Q", "Q = E[1/p(c|Y)]"),
    ("interval", "interval", "interval for Q; upper end infinite: lower bound only"),
    ("q_se", "se(Q)", "standard error of Q"),
    ("pareto_khat", "k-hat", "Pareto k-hat of the terms 1/p(c|Y)"),
    ("khat_threshold", "threshold", "k-hat above this: the mean is not reliable"),
    ("q_top_share", "top share", "share of the sum of 1/p(c|Y) held by the largest 0.1 %"),
    ("q_reliable", "reliable", "tail diagnosis: is the interval for Q reliable?"),
    ("interval_method", "interval method", None),
    ("p_mean", "E[p]", "E[p(c|Y)]"),
    ("p_se", "se(E[p])", None),
    ("accuracy", "accuracy", "fraction with argmax p(.|Y) = c"),
    ("frac_p_decreased", "p down", "fraction of rows whose p(c|Y) went down against w = 0"),
    ("inv_prior", "1/p(c)", "reference value of Q: exact draws give 1/p(c)"),
    ("n_nonfinite", "non-finite", "samples lost to non-finite values"),
)
_NOT_EXTRA = {name for name, _, _ in _CLASS_COLUMNS} | set(_PROVENANCE) | {
    "class", "q_low", "q_high", "level", "khat_method", "warnings", "reference", "unit_id",
    "key", "chunk_rows"}

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
       sans-serif; margin: 0; color: #1d2329; background: #fafafa; line-height: 1.45; }
main { max-width: 1260px; margin: 0 auto; padding: 1.2em 2em 3em; background: #fff; }
h1 { font-size: 1.7em; margin: 0.3em 0 0.2em; }
h2 { font-size: 1.3em; margin-top: 1.8em; border-bottom: 2px solid #dde3e8;
     padding-bottom: 0.2em; }
h3 { font-size: 1.08em; margin: 1.4em 0 0.4em; }
p.lead { color: #44505c; white-space: pre-wrap; }
nav { font-size: 0.92em; margin: 0.8em 0; }
nav a { margin-right: 1.2em; color: #1f5f99; }
table { border-collapse: collapse; margin: 0.4em 0 1em; font-size: 0.86em; }
th, td { border: 1px solid #d5dbe0; padding: 0.22em 0.55em; vertical-align: top; }
th { background: #eef2f5; text-align: left; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr:nth-child(even) td { background: #f7f9fa; }
tr.unreliable td { background: #fff4e0 !important; }
tr.reference td { font-style: italic; }
td.bad { color: #b3261e; font-weight: 700; }
td.good { color: #1e7b34; }
table.facts th { width: 13em; }
figure { margin: 0.6em 0 1.2em; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #e3e7ea; }
figcaption { font-size: 0.88em; color: #44505c; margin-top: 0.35em; max-width: 70em; }
.notes { background: #fff8e5; border-left: 4px solid #e0a800; padding: 0.5em 1em;
         font-size: 0.9em; }
.warnings { background: #fdecea; border-left: 4px solid #d93025; padding: 0.5em 1em;
            font-size: 0.9em; margin: 0.8em 0; }
.warnings summary { cursor: pointer; }
.legend { font-size: 0.86em; color: #44505c; }
pre { background: #f3f5f7; border: 1px solid #dde3e8; padding: 0.8em; overflow-x: auto;
      font-size: 0.85em; }
.scroll { overflow-x: auto; }
"""


# ----------------------------------------------------------------------------- formatting

def _e(value: Any) -> str:
    """HTML-escaped text of any value."""
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 4) -> str:
    """A cell's text: None -> an em dash, bools yes/no, floats to ``digits`` significant
    digits, infinities as the symbol (unescaped: the caller escapes)."""
    if value is None:
        return "\u2014"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "\u221e" if value > 0 else "\u2212\u221e"
        return f"{value:.{digits}g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v, digits) for v in value) + "]"
    return str(value)


def _w_text(w: Any) -> str:
    x = _number(w)
    return _fmt(w) if x is None else f"{x:g}"


def _is_numeric(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value,
                                                                                      bool)


def _td(value: Any, css: str = "", title: str | None = None, digits: int = 4) -> str:
    classes = " ".join(c for c in (("num" if _is_numeric(value) else ""), css) if c)
    attrs = f' class="{classes}"' if classes else ""
    if title:
        attrs += f' title="{_e(title)}"'
    return f"<td{attrs}>{_e(_fmt(value, digits))}</td>"


def _table(headers: Sequence[tuple[str, str | None]], body: Iterable[str],
           css: str = "") -> str:
    head = "".join(f'<th title="{_e(tip)}">{_e(h)}</th>' if tip else f"<th>{_e(h)}</th>"
                   for h, tip in headers)
    cls = f' class="{css}"' if css else ""
    return (f'<div class="scroll"><table{cls}><thead><tr>{head}</tr></thead><tbody>'
            + "".join(body) + "</tbody></table></div>")


def _img(png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_e(alt)}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-") or "x"


# ----------------------------------------------------------------------------- loading

@dataclass
class _Study:
    """What the results folder holds; ``notes`` collects the parts left out and why."""

    root: Path
    spec_text: str | None = None
    spec_data: dict | None = None
    rows: list[dict] = field(default_factory=list)
    samples: dict[str, list] | None = None
    unit_files: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def sweep(self) -> dict:
        sweep = (self.spec_data or {}).get("sweep")
        return sweep if isinstance(sweep, dict) else {}


def _load(root: Path) -> _Study:
    """What the folder holds, read through the results store (:class:`~guidelab.studies.
    store.ResultStore`, read-only): only files that pass its checks (and files that carry no
    guidelab metadata at all, shown unverified); every other file is a note."""
    import pyarrow as pa

    try:
        import tomllib
    except ImportError:  # pragma: no cover - the spec module is part of the package
        import tomllib

    from ..studies.store import ResultStore

    study = _Study(root)
    store = ResultStore(root, label="run_dir")
    try:
        study.spec_text = store.read_spec_text()
        if study.spec_text is None:
            study.notes.append("no spec.toml in the results folder: the study's description, "
                               "its spec and the density contours are left out.")
        else:
            study.spec_data = tomllib.loads(study.spec_text)
    except ValueError as error:  # unreadable, not UTF-8, not TOML
        study.notes.append(f"spec.toml could not be read ({error}); the study's "
                           f"description and the density contours are left out.")

    found = store.read_all(accept_unverified=True)
    for problem in found.problems:
        what = "samples" if problem.kind == "samples" else "rows"
        study.notes.append(f"{problem.path.relative_to(root)} could not be read "
                           f"({problem.reason}); its {what} are left out.")
    if found.unverified:
        study.notes.append(f"{len(found.unverified)} unit files carry no guidelab checksum "
                           f"(written by hand or by an older guidelab); their rows are shown "
                           f"unverified.")
    for unit_id, rows in found.rows.items():
        study.unit_files += 1
        for row in rows:
            row.setdefault("unit_id", unit_id)
        study.rows.extend(rows)
    usable = [r for r in study.rows if r.get("class") is not None
              and _number(r.get("w")) is not None]
    if len(usable) < len(study.rows):
        study.notes.append(f"{len(study.rows) - len(usable)} rows without a class or a "
                           f"strength w are left out.")
    study.rows = usable

    tables = list(found.samples.values())
    if tables:
        try:
            table = pa.concat_tables(tables, promote_options="default")
            study.samples = table.to_pydict()
        except (pa.ArrowException, ValueError) as error:
            study.notes.append(f"the sample files do not share a schema ({error}); the "
                               f"scatter plots are left out.")
    return study


# ----------------------------------------------------------------------------- structure

def _is_reference(row: dict) -> bool:
    return row.get("reference") is True or row.get("sampler") == REFERENCE_SAMPLER


def _series_columns(study: _Study) -> list[str]:
    """Columns whose values split the main rows into settings (every swept key other than w
    and class that is a column, then provenance columns that vary)."""
    main = [r for r in study.rows if not _is_reference(r)]
    candidates = [k for k in study.sweep if k not in ("w", "class")]
    candidates += [k for k in _SERIES_FALLBACK if k not in candidates]
    out: list[str] = []
    groups = 1
    for key in candidates:
        if len({_freeze(r.get(key)) for r in main if key in r}) < 2:
            continue
        split = len({tuple(_freeze(r.get(k)) for k in (*out, key)) for r in main})
        if split > groups:  # a column that only repeats an earlier split is left out
            out.append(key)
            groups = split
    return out


def _samplerish(key: str) -> bool:
    return key in _SAMPLER_KEYS or key.startswith(("sampler.", "guidance."))


@dataclass
class _Series:
    key: tuple
    label: str
    rows: list[dict]              # main rows and matching reference rows
    unit_ids: set[str]


def _split_series(study: _Study, columns: list[str]) -> list[_Series]:
    main = [r for r in study.rows if not _is_reference(r)]
    refs = [r for r in study.rows if _is_reference(r)]
    groups: dict[tuple, list[dict]] = {}
    for row in main:
        groups.setdefault(tuple(_freeze(row.get(k)) for k in columns), []).append(row)
    if not main and refs:
        groups[tuple(None for _ in columns)] = []
    series = []
    for key in sorted(groups, key=lambda k: tuple((v is None, str(v)) for v in k)):
        values = dict(zip(columns, key, strict=True))
        matching = [r for r in refs if all(_samplerish(k) or r.get(k) is None
                                           or _freeze(r.get(k)) == v for k, v in values.items())]
        rows = matching + groups[key]
        label = ", ".join(f"{k} = {_fmt(v)}" for k, v in values.items())
        series.append(_Series(key, label, rows, {r.get("unit_id") for r in rows}))
    return series


def _extra_columns(rows: Sequence[dict], skip: set[str]) -> list[str]:
    """Columns beyond the known ones (e.g. exact references: grid_q, entropy, kl), in order of
    first appearance; record columns (``record_*``) are left out."""
    out: list[str] = []
    for row in rows:
        for key, value in row.items():
            if key in _NOT_EXTRA or key in skip or key in out or key.startswith("record_"):
                continue
            if isinstance(value, (dict, bytes)):
                continue
            out.append(key)
    return [k for k in out if any(r.get(k) is not None for r in rows)]


# ----------------------------------------------------------------------------- density

def _spec_densities(study: _Study) -> tuple[Callable[[str], DensityFn | None] | None, str | None]:
    """``unit_id -> density`` built from the recorded spec's distribution, or (None, reason).

    Only the spec's structure is validated (no device check), so a report can be written on
    another machine than the run's."""
    if study.spec_data is None:
        return None, "no readable spec"
    try:
        import torch

        from ..studies.spec import Spec
        from ..studies.units import expand_units, unit_settings

        spec = Spec.model_validate(study.spec_data)
        swept_distribution = any(k.startswith("distribution") for k in study.sweep)
        base = None if swept_distribution else spec.distribution_object()
        units = {u.id: u for u in expand_units(spec)} if swept_distribution else {}
    except Exception as error:  # noqa: BLE001 - any failure only leaves the contours out
        return None, f"the spec's distribution could not be built ({type(error).__name__}: " \
                     f"{error})"

    cache: dict[str, DensityFn | None] = {}

    def wrap(distribution) -> DensityFn:
        def density(x: np.ndarray, c: int) -> np.ndarray:
            points = torch.as_tensor(np.asarray(x, dtype=np.float64))  # [N, d]
            return distribution.log_prob(points, 1.0, 0.0, int(c)).numpy()  # [N]
        return density

    def for_unit(unit_id: str) -> DensityFn | None:
        if base is not None:
            return wrap(base)
        if unit_id not in cache:
            unit = units.get(unit_id)
            try:
                cache[unit_id] = None if unit is None else wrap(
                    unit_settings(spec, unit).distribution_object())
            except Exception:  # noqa: BLE001
                cache[unit_id] = None
        return cache[unit_id]

    return for_unit, None


def _scatter_figure(samples: dict[str, list], index: np.ndarray, classes: list[int],
                    strengths: list[float], dim: int,
                    density_of: Callable[[int], DensityFn | None]) -> tuple[bytes, list[str]]:
    """Panels (class rows x strength columns) of samples over log p(x|c) contours (d = 2) or
    a histogram under p(x|c) (d = 1). Returns the PNG and notes about panels."""
    plt = _pyplot()
    notes: list[str] = []
    w_all = np.asarray(samples["w"], dtype=np.float64)[index]  # [M]
    c_all = np.asarray(samples["class"])[index]  # [M]
    x_all = np.stack([np.asarray(samples[f"x{j}"], dtype=np.float64)[index]
                      for j in range(dim)], axis=1)  # [M, d]
    finite = np.isfinite(x_all).all(axis=1)  # [M]
    if not finite.any():
        raise ValueError("samples: no finite sample to draw")
    lo = np.quantile(x_all[finite], 0.005, axis=0)  # [d]
    hi = np.quantile(x_all[finite], 0.995, axis=0)  # [d]
    span = np.maximum(hi - lo, 1e-6)
    lo, hi = lo - 0.2 * span, hi + 0.2 * span
    rows, cols = len(classes), len(strengths)
    fig, axes = plt.subplots(rows, cols, figsize=(2.9 * cols + 0.6, 2.7 * rows + 0.5),
                             squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    grid_x = np.linspace(lo[0], hi[0], GRID_POINTS)  # [G]
    if dim == 2:
        grid_y = np.linspace(lo[1], hi[1], GRID_POINTS)  # [G]
        gx, gy = np.meshgrid(grid_x, grid_y)  # [G, G]
        points = np.stack([gx.ravel(), gy.ravel()], axis=1)  # [G*G, 2]
    else:
        points = grid_x[:, None]  # [G, 1]
    failed = False
    for i, c in enumerate(classes):
        density = density_of(c)
        log_p = None
        if density is not None:
            try:
                log_p = np.asarray(density(points, c), dtype=np.float64).reshape(-1)  # [G*G]
                if log_p.shape[0] != points.shape[0] or not np.isfinite(log_p).any():
                    log_p = None
            except Exception:  # noqa: BLE001 - a failing density only leaves contours out
                log_p = None
            failed = failed or log_p is None
        for j, w in enumerate(strengths):
            ax = axes[i][j]
            pick = (c_all == c) & (w_all == w) & finite  # [M]
            x = x_all[pick]  # [m, d]
            color = colors[i % len(colors)]
            outside = int(((x < lo) | (x > hi)).any(axis=1).sum())
            if dim == 2:
                if log_p is not None:
                    top = np.max(log_p[np.isfinite(log_p)])
                    z = np.where(np.isfinite(log_p), np.maximum(log_p, top - 12.0),
                                 top - 12.0).reshape(gx.shape)  # [G, G]
                    ax.contourf(gx, gy, z, levels=12, cmap="Greys", alpha=0.4)
                    ax.contour(gx, gy, z, levels=12, colors="0.45", linewidths=0.4)
                ax.scatter(x[:, 0], x[:, 1], s=7, alpha=0.75, color=color, linewidths=0)
                ax.set_ylim(lo[1], hi[1])
            else:
                if len(x):
                    ax.hist(x[:, 0], bins=30, range=(lo[0], hi[0]), density=True, color=color,
                            alpha=0.55)
                if log_p is not None:
                    ax.plot(grid_x, np.exp(log_p), color="0.2", lw=1.2)
                ax.set_yticks([])
            ax.set_xlim(lo[0], hi[0])
            title = f"class {c}, w = {w:g}  (n = {len(x)}"
            title += f", {outside} outside)" if outside else ")"
            ax.set_title(title, fontsize=8.5)
            ax.tick_params(labelsize=7)
            if dim == 2:
                ax.set_aspect("equal", adjustable="box")
    if failed:
        notes.append("the density could not be evaluated for some classes; their panels "
                     "show the samples only.")
    fig.tight_layout()
    return figure_png(fig, dpi=100), notes


def _pick_strengths(values: Iterable[float], k: int = MAX_SCATTER_W) -> list[float]:
    """Up to ``k`` strengths spread over the sorted distinct values (first and last kept)."""
    ordered = sorted(set(values))
    if len(ordered) <= k:
        return ordered
    picks = np.unique(np.round(np.linspace(0, len(ordered) - 1, k)).astype(int))
    return [ordered[i] for i in picks]


# ----------------------------------------------------------------------------- sections

def _overview(study: _Study) -> str:
    spec = study.spec_data or {}
    facts: list[tuple[str, Any]] = []
    dist = spec.get("distribution")
    if isinstance(dist, dict):
        family = dist.get("family", "?")
        facts.append(("distribution", f"{family} {dist.get('name', '')}".strip()
                      if family == "builtin" else family))
    guidance = spec.get("guidance")
    if isinstance(guidance, dict):
        strength = guidance.get("strength")
        kind = strength.get("kind") if isinstance(strength, dict) else None
        facts.append(("guidance", f"{guidance.get('rule', '?')}"
                      + (f", strength {kind}" if kind else "")))
    sampler = spec.get("sampler")
    if isinstance(sampler, dict):
        text = f"{sampler.get('name', '?')}, schedule {sampler.get('schedule', '?')}, " \
               f"T = {sampler.get('steps', '?')}"
        if sampler.get("options"):
            text += f", options {_fmt(sampler.get('options'))}"
        facts.append(("sampler", text))
    for key in ("trials", "seed", "dtype", "device"):
        if key in spec:
            facts.append((key, spec[key]))
    for key, values in study.sweep.items():
        facts.append((f"sweep.{key}", ", ".join(_fmt(v) for v in values)
                      if isinstance(values, list) else values))
    reference = spec.get("reference")
    if isinstance(reference, dict) and reference.get("enabled"):
        facts.append(("reference", f"exact reverse kernel at w = 0, "
                                   f"{reference.get('steps', '?')} steps"))
    units = study.unit_files
    expected = _expected_units(study)
    facts.append(("units finished", f"{units} of {expected}" if expected else units))
    facts.append(("rows", len(study.rows)))
    versions = sorted({str(r["guidelab_version"]) for r in study.rows
                       if r.get("guidelab_version") is not None})
    if versions:
        facts.append(("guidelab version", ", ".join(versions)))
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_fmt(v))}</td></tr>" for k, v in facts)
    return f'<table class="facts"><tbody>{body}</tbody></table>'


def _expected_units(study: _Study) -> int | None:
    if study.spec_data is None:
        return None
    try:
        from ..studies.spec import Spec
        from ..studies.units import expand_units

        return len(expand_units(Spec.model_validate(study.spec_data)))
    except Exception:  # noqa: BLE001 - the count is informative only
        return None


def _summary_table(series: _Series) -> tuple[str, list[str]]:
    """w x class table of Q with its interval and E[p], and the classes pooled."""
    notes: list[str] = []
    main = [r for r in series.rows if not _is_reference(r)]
    classes = sorted({r["class"] for r in main})
    strengths = sorted({float(r["w"]) for r in main})
    by = {(r["class"], float(r["w"])): r for r in main}
    has_q = any(_number(r.get("q_mean")) is not None for r in main)
    has_p = any(_number(r.get("p_mean")) is not None for r in main)
    priors = {}
    for r in main:
        inv = _number(r.get("inv_prior"))
        if inv is not None and inv > 0 and math.isfinite(inv):
            priors[r["class"]] = 1.0 / inv
    pooled = len(priors) == len(classes) and len(classes) > 1
    headers: list[tuple[str, str | None]] = [("w", None)]
    for c in classes:
        if has_q:
            headers.append((f"class {c}: Q [interval]", None))
        if has_p:
            headers.append((f"class {c}: E[p]", None))
    if pooled:
        total = sum(priors.values())
        weights = {c: p / total for c, p in priors.items()}
        exact = sum(weights[c] / priors[c] for c in classes)
        if has_q:
            headers.append((f"pooled Q (exact at w = 0: {exact:.4g})",
                            "sum over classes of pi_c Q_c, pi_c = p(c) normalised over the "
                            "classes shown"))
            headers.append(("se", "sqrt(sum pi_c^2 se_c^2), shown when every class is "
                                  "reliable"))
        for col, name in (("p_mean", "pooled E[p]"), ("accuracy", "pooled accuracy"),
                          ("frac_p_decreased", "pooled p down")):
            if any(_number(r.get(col)) is not None for r in main):
                headers.append((name, None))
    body = []
    for w in strengths:
        cells = [_td(w)]
        unreliable = False
        for c in classes:
            row = by.get((c, w), {})
            if row.get("q_reliable") is False:
                unreliable = True
            if has_q:
                cells.append(_td_q(row))
            if has_p:
                cells.append(_td(_number(row.get("p_mean"))))
        if pooled:
            rows_w = [by.get((c, w)) for c in classes]
            complete = all(r is not None for r in rows_w)
            if has_q:
                q = [_number(r.get("q_mean")) for r in rows_w] if complete else [None]
                value = sum(weights[c] * v for c, v in zip(classes, q, strict=True)) \
                    if None not in q else None
                cells.append(_td(value))
                se = [_number(r.get("q_se")) for r in rows_w] if complete else [None]
                ok = complete and all(r.get("q_reliable") is True for r in rows_w)
                se_value = math.sqrt(sum((weights[c] * s) ** 2 for c, s in
                                         zip(classes, se, strict=True))) \
                    if ok and None not in se else None
                cells.append(_td(se_value))
            for col in ("p_mean", "accuracy", "frac_p_decreased"):
                if any(_number(r.get(col)) is not None for r in main):
                    vals = [_number(r.get(col)) for r in rows_w] if complete else [None]
                    cells.append(_td(sum(weights[c] * v for c, v in zip(classes, vals,
                                                                        strict=True))
                                     if None not in vals else None))
        css = ' class="unreliable"' if unreliable else ""
        body.append(f"<tr{css}>{''.join(cells)}</tr>")
    if not has_q and not has_p:
        notes.append("no q_mean or p_mean column: the summary table shows strengths only.")
    if not pooled and len(classes) > 1:
        notes.append("inv_prior is missing for some class: the pooled columns are left out.")
    return _table(headers, body), notes


def _td_q(row: dict) -> str:
    q, low, high = (_number(row.get(k)) for k in ("q_mean", "q_low", "q_high"))
    if q is None:
        return _td(None)
    text = _fmt(q)
    if low is not None or high is not None:
        text += f" [{_fmt(low)}, {_fmt(high)}]"
    css = "num bad" if high == math.inf or row.get("q_reliable") is False else "num"
    return f'<td class="{css}">{_e(text)}</td>'


_FOLDED = {"khat_threshold": "k-hat threshold", "inv_prior": "1/p(c)", "n": "n"}
"""Columns shown once above a class's table (not as a column) when constant in it."""


def _class_table(rows: list[dict], extras: list[str]) -> str:
    """The class's measurements and tail diagnosis (one row per w, the reference first), then
    the quantiles of p(c|Y) and any extra columns in a second table."""
    folded = {}
    for key, label in _FOLDED.items():
        values = {_freeze(r.get(key)) for r in rows}
        if len(values) == 1 and None not in values:
            folded[key] = (label, values.pop())
    present = [(k, h, t) for k, h, t in _CLASS_COLUMNS if k not in folded and (
        k == "interval" and any("q_low" in r or "q_high" in r for r in rows)
        or any(r.get(k) is not None for r in rows))]
    levels = {_number(r.get("level")) for r in rows} - {None}
    headers = []
    for key, head, tip in present:
        if key == "interval" and len(levels) == 1:
            head = f"interval ({100 * levels.pop():g} %)"
        headers.append((head, tip))
    ordered = sorted(rows, key=lambda r: (not _is_reference(r), float(r["w"])))
    limit = _number(folded.get("khat_threshold", (None, None))[1])

    def sampler_cell(row: dict) -> str:
        value = row.get("sampler")
        return _td(f"{value or REFERENCE_SAMPLER} (reference)" if _is_reference(row)
                   else value)

    def row_attr(row: dict) -> str:
        css = []
        if row.get("q_reliable") is False:
            css.append("unreliable")
        if _is_reference(row):
            css.append("reference")
        return f' class="{" ".join(css)}"' if css else ""

    body = []
    for row in ordered:
        cells = []
        for key, _, _ in present:
            value = row.get(key)
            if key == "sampler":
                cells.append(sampler_cell(row))
            elif key == "interval":
                low, high = _number(row.get("q_low")), _number(row.get("q_high"))
                text = f"[{_fmt(low)}, {_fmt(high)}]"
                if high == math.inf:
                    text += " \u2191 unbounded"
                css = "num bad" if high == math.inf else "num"
                cells.append(f'<td class="{css}">{_e(text)}</td>')
            elif key == "q_reliable":
                css = "bad" if value is False else "good" if value is True else ""
                cells.append(_td(value, css))
            elif key == "pareto_khat":
                k_hat = _number(value)
                row_limit = _number(row.get("khat_threshold")) if limit is None else limit
                bad = k_hat is not None and row_limit is not None and k_hat > row_limit
                cells.append(_td(value, "bad" if bad else "", digits=3))
            elif key == "interval_method" and isinstance(value, str):
                cells.append(_td(value.split(" (")[0], title=value))
            else:
                cells.append(_td(value))
        body.append(f"<tr{row_attr(row)}>{''.join(cells)}</tr>")
    parts = []
    if folded:
        parts.append('<p class="legend">' + "; ".join(
            f"{_e(label)} = {_e(_fmt(value))}" for label, value in folded.values()) + "</p>")
    parts.append(_table(headers, body))
    if extras:
        body = []
        for row in ordered:
            cells = [_td(row.get("w")), sampler_cell(row)] + [_td(row.get(k)) for k in extras]
            body.append(f"<tr{row_attr(row)}>{''.join(cells)}</tr>")
        heads = [("w", None), ("sampler", None)] + [
            (f"p(c|Y) quantile {int(k[3:])} %" if _P_QUANTILE.fullmatch(k) else k, None)
            for k in extras]
        parts.append(_table(heads, body))
    return "".join(parts)


def _provenance_table(study: _Study) -> tuple[str, list[str]]:
    by_unit: dict[str, list[dict]] = {}
    for row in study.rows:
        by_unit.setdefault(str(row.get("unit_id")), []).append(row)
    swept = [k for k in study.sweep if k not in ("w", "class") and k not in _PROVENANCE
             and any(k in r for r in study.rows)]
    columns = ["class", *[k for k in _PROVENANCE if any(k in r for r in study.rows)], *swept]
    headers = [("unit", None), *[(k, None) for k in columns], ("strengths", None), ("n", None)]
    body = []
    notes = []
    for i, (unit, rows) in enumerate(sorted(by_unit.items())):
        if i == MAX_PROVENANCE_ROWS:
            notes.append(f"provenance of {len(by_unit) - i} more units is left out.")
            break
        cells = [_td(unit)]
        for key in columns:
            values = sorted({_fmt(r.get(key)) for r in rows})
            cells.append(_td(values[0] if len(values) == 1 else ", ".join(values)))
        ns = sorted({_fmt(r.get("n")) for r in rows})
        cells += [_td(len(rows)), _td(", ".join(ns) if len(ns) > 1 else ns[0])]
        body.append(f"<tr>{''.join(cells)}</tr>")
    return _table(headers, body), notes


def _warnings(study: _Study) -> str:
    items = set()
    for row in study.rows:
        text = row.get("warnings")
        if isinstance(text, str):
            for part in text.split(" | "):
                if part.strip():
                    items.add((str(row["class"]), float(row["w"]),
                               str(row.get("sampler", "")), part.strip()))
    nonfinite = sum(int(n) for r in study.rows if _is_numeric(n := r.get("n_nonfinite")))
    lines = [f"class {c}, w = {w:g} ({s}): {t}" for c, w, s, t in sorted(items)]
    if nonfinite:
        lines.insert(0, f"{nonfinite} samples were non-finite; they are counted in "
                        f"n_nonfinite and left out of every average.")
    if not lines:
        return ""
    shown = lines[:60] + ([f"... and {len(lines) - 60} more"] if len(lines) > 60 else [])
    opened = " open" if len(lines) <= 4 else ""
    return (f'<details class="warnings"{opened}><summary><strong>{len(lines)} warning'
            f'{"s" if len(lines) > 1 else ""} from the measurements</strong> (tail diagnosis, '
            f"non-finite samples)</summary><ul>"
            + "".join(f"<li>{_e(line)}</li>" for line in shown) + "</ul></details>")


def _series_section(study: _Study, series: _Series, index: int, extras: list[str],
                    density_for_unit, density_note: str | None,
                    density: DensityFn | None) -> tuple[str, list[str]]:
    notes: list[str] = []
    where = f" ({series.label})" if series.label else ""
    out = [f'<h2 id="s{index}">Setting {index + 1}{_e(where)}</h2>' if series.label
           else f'<h2 id="s{index}">Results</h2>']
    rows = series.rows
    main = [r for r in rows if not _is_reference(r)]
    if any(_number(r.get("q_mean")) is not None for r in rows):
        plot_rows = [dict(r, sampler=REFERENCE_SAMPLER) if _is_reference(r) else r
                     for r in rows]
        png = figure_png(q_vs_w_figure(plot_rows, title=series.label or None))
        out.append(_img(png, f"Q(w) and E[p](w){where}",
                        "Left: Q(w) = E[1/p(c|Y)] per class with its interval; a triangle "
                        "marks an interval whose upper end is unbounded (the tail diagnosis "
                        "found the mean unreliable); dashed lines: 1/p(c), the value of exact "
                        "unguided draws; open squares: the exact reverse kernel at w = 0. "
                        "Right: E[p(c|Y)]. w on a symmetric-log axis (linear below 0.01)."))
    else:
        notes.append(f"no q_mean column{where}: the Q(w) figure is left out.")
    if main:
        out.append("<h3>Summary over classes</h3>")
        table, more = _summary_table(series)
        out.append(table)
        out.append('<p class="legend">Rows shaded amber hold a class whose interval is not '
                   "reliable; red values: upper end unbounded or unreliable. Pooled columns "
                   "weigh class c by p(c), renormalised over the classes shown.</p>")
        notes += [m + where for m in more]
    scatter, more = _scatter_section(study, series, density_for_unit, density_note, density)
    out.append(scatter)
    notes += more
    out.append("<h3>Per class: measurements and tail diagnosis</h3>")
    for c in sorted({r["class"] for r in rows}):
        class_rows = [r for r in rows if r["class"] == c]
        out.append(f"<h3>Class {_e(c)}</h3>")
        out.append(_class_table(class_rows, extras))
    return "".join(out), notes


def _scatter_section(study: _Study, series: _Series, density_for_unit, density_note,
                     density: DensityFn | None) -> tuple[str, list[str]]:
    samples = study.samples
    if not samples:
        return "", []
    where = f" ({series.label})" if series.label else ""
    missing = [k for k in ("class", "w", "x0") if k not in samples]
    if missing:
        return "", [f"the sample files lack {', '.join(missing)}: scatter plots left out."]
    if "x2" in samples:
        return "", ["samples have d > 2: scatter plots are drawn for d <= 2 only."]
    dim = 2 if "x1" in samples else 1
    unit_ids = np.asarray(samples.get("unit_id", [None] * len(samples["w"])), dtype=object)
    sampler = np.asarray(samples.get("sampler", [None] * len(samples["w"])), dtype=object)
    keep = np.array([u in series.unit_ids for u in unit_ids]) if "unit_id" in samples \
        else np.ones(len(unit_ids), dtype=bool)
    keep &= sampler != REFERENCE_SAMPLER
    if "unit_id" in samples and series.unit_ids:
        ref_units = {r.get("unit_id") for r in series.rows if _is_reference(r)}
        keep &= np.array([u not in ref_units for u in unit_ids])
    index = np.flatnonzero(keep)  # [M]
    if index.size == 0:
        return "", []
    w_values = np.asarray(samples["w"], dtype=np.float64)[index]
    classes_all = sorted({int(c) for c in np.asarray(samples["class"])[index]})
    classes = classes_all[:MAX_SCATTER_CLASSES]
    notes = []
    if len(classes_all) > len(classes):
        notes.append(f"scatter plots show the first {len(classes)} of {len(classes_all)} "
                     f"classes{where}.")
    strengths = _pick_strengths(w_values.tolist())
    class_unit = {}
    for r in series.rows:
        if not _is_reference(r):
            class_unit.setdefault(int(r["class"]), r.get("unit_id"))

    def density_of(c: int) -> DensityFn | None:
        if density is not None:
            return density
        if density_for_unit is None:
            return None
        return density_for_unit(class_unit.get(c))

    if density is None and density_for_unit is None:
        notes.append(f"no density for the contours ({density_note}); the scatter plots show "
                     f"the samples only.")
    try:
        png, more = _scatter_figure(samples, index, classes, strengths, dim, density_of)
    except (ValueError, KeyError, TypeError) as error:
        return "", [f"scatter plots left out{where}: {error}"]
    notes += [m + where for m in more]
    what = ("samples over contours of log p(x | c) (grey; 12 levels spanning 12 nats below "
            "the mode)" if dim == 2 else "histograms of the samples under the density "
            "p(x | c) (curve)")
    caption = (f"Stored samples of the guided sampler at w = "
               f"{', '.join(f'{w:g}' for w in strengths)}: {what}. Rows: classes; columns: "
               f"strengths. Axes are shared and cut at the 0.5 % and 99.5 % quantiles of all "
               f"samples shown (plus a margin); the count outside is in each title.")
    return ("<h3>Samples</h3>" + _img(png, f"samples at a few strengths{where}", caption),
            notes)


# ----------------------------------------------------------------------------- page

def _page(study: _Study, density: DensityFn | None) -> str:
    spec = study.spec_data or {}
    name = str(spec.get("name") or study.root.name or "study")
    description = str(spec.get("description") or "").strip()
    notes = list(study.notes)
    sections: list[str] = []
    columns = _series_columns(study)
    series = _split_series(study, columns) if study.rows else []
    if not study.rows:
        notes.append("no finished unit yet: the results sections are empty.")
    if len(series) > MAX_SERIES:
        notes.append(f"{len(series)} settings; figures and tables are shown for the first "
                     f"{MAX_SERIES}: " + "; ".join(s.label for s in series[MAX_SERIES:]))
        series = series[:MAX_SERIES]
    for s in series:
        main = [r for r in s.rows if not _is_reference(r)]
        seen: set[tuple] = set()
        for r in main:
            key = (r["class"], float(r["w"]))
            if key in seen:
                notes.append(f"several rows share class {r['class']} and w = {r['w']:g}"
                             + (f" ({s.label})" if s.label else "") + "; the figure and "
                             "tables mix them (a swept key may be missing from the rows).")
                break
            seen.add(key)
    density_for_unit, density_note = (None, None)
    if density is None and study.samples:
        density_for_unit, density_note = _spec_densities(study)
    extras = _extra_columns(study.rows, set(columns) | set(study.sweep))
    for i, s in enumerate(series):
        section, more = _series_section(study, s, i, extras, density_for_unit, density_note,
                                        density)
        sections.append(section)
        notes += more
    provenance, more = _provenance_table(study) if study.rows else ("", [])
    notes += more

    nav = ['<a href="#overview">Overview</a>']
    nav += [f'<a href="#s{i}">{_e(s.label or "Results")}</a>' for i, s in enumerate(series)]
    nav += ['<a href="#provenance">Provenance</a>', '<a href="#spec">Spec</a>']
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(name)}: guidelab report</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f"<h1>{_e(name)}</h1>",
        f'<p class="lead">{_e(description)}</p>' if description else "",
        f"<nav>{''.join(nav)}</nav>",
        '<h2 id="overview">Overview</h2>',
        "<p>Q(w) = E[1/p(c|Y)] over samples Y of the sampler guided towards class c with "
        "strength w (w = 0 unguided; CFG scale = 1 + w). Exact unguided draws give "
        "Q = 1/p(c); guidance of strength w &gt; 0 lowers Q (Li &amp; Jiao) although p(c|Y) "
        "need not rise for every sample (\u201cp down\u201d: the fraction of coupled rows whose "
        "p(c|Y) fell against w = 0). The tail diagnosis (Pareto k-hat of the terms 1/p(c|Y) "
        "against its threshold) decides whether Q's interval is reliable.</p>",
        _overview(study),
        _warnings(study),
    ]
    if notes:
        parts.append('<div class="notes"><strong>Parts left out or to read with care</strong>'
                     "<ul>" + "".join(f"<li>{_e(n)}</li>" for n in dict.fromkeys(notes))
                     + "</ul></div>")
    parts += sections
    parts.append('<h2 id="provenance">Provenance</h2>')
    if provenance:
        parts.append("<p>What produced each unit's rows (one unit: one class and one value of "
                     "every swept key other than w; its strengths share their noise).</p>")
        parts.append(provenance)
    else:
        parts.append("<p>No rows.</p>")
    parts.append('<h2 id="spec">Spec</h2>')
    if study.spec_text is not None:
        parts.append("<p>The resolved spec that produced these results "
                     "(<code>spec.toml</code>); <code>guidelab run</code> reads it back as "
                     "it is.</p>")
        parts.append(f"<pre>{_e(study.spec_text)}</pre>")
    else:
        parts.append("<p>No spec.toml in the results folder.</p>")
    parts.append("</main></body></html>\n")
    return "\n".join(p for p in parts if p)


def write_report(run_dir: str | os.PathLike, *, out: str | os.PathLike | None = None,
                 density: DensityFn | None = None) -> Path:
    """Write the study's HTML report (module docstring) and return its path.

    Args:
        run_dir: a results folder of ``guidelab run`` (``spec.toml``, ``units/``,
            ``samples/``).
        out: the HTML file (default ``run_dir/report.html``); written atomically with the
            permissions the umask gives.
        density: ``density(x, c)`` -> log p(x | c) for points ``x`` ``[N, d]`` -> ``[N]``, for
            the contours under the scatter plots. Default: the distribution of the recorded
            spec (per unit when a distribution key is swept).

    Raises:
        ValueError: ``run_dir`` is not a results folder (no ``spec.toml`` and no
            ``units/``), or ``out`` cannot be written.
    """
    from ..studies.results import atomic_write_bytes

    root = Path(run_dir)
    if not root.exists():
        raise ValueError(f"run_dir: {root} does not exist")
    if not root.is_dir():
        raise ValueError(f"run_dir: {root} is a file; expected a results folder")
    if not (root / "spec.toml").is_file() and not (root / "units").is_dir():
        raise ValueError(f"run_dir: {root} is not a results folder (no spec.toml and no "
                         f"units/); expected the --out folder of guidelab run")
    target = Path(out) if out is not None else root / "report.html"
    if target.is_dir():
        raise ValueError(f"out: {target} is a folder; expected the report's file name")
    page = _page(_load(root), density)
    try:
        atomic_write_bytes(target, page.encode("utf-8"))
    except OSError as error:
        raise ValueError(f"out: cannot write {target}: {error.strerror or error}") from None
    return target
