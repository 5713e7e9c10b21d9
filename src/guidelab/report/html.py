r"""One self-contained HTML page for a study's results folder, redrawn from the store alone.

The page summarises what guidance does in a study run by ``guidelab run SPEC --out DIR``. For
each class c and guidance strength w the study measured, on samples Y^w of the guided sampler,
whatever its metrics give (:mod:`guidelab.studies.measures`):

* ``class_probability``: Q_c(w) = E[1 / p(c | Y^w)] with its interval (the reference value is
  1/p(c): exact draws from p(x | c) give E[1/p(c|X)] = 1/p(c)), E[p(c | Y^w)], the accuracy,
  the fraction of coupled rows whose p(c|Y) went down against w = 0, and the tail diagnosis of
  the terms 1/p(c|Y) (Pareto k-hat against its threshold, top share, interval method: an
  interval whose upper end is infinite is "lower bound only");
* ``exact_grid``: the exact grid Q (no Monte Carlo error) beside the estimate, with entropy and
  KL divergence of the output law;
* ``dominance``: the stochastic-dominance verdict and the baseline quantile q* it holds from;
* ``calibration``: the judge's reliability diagrams and ECEs, and real data's Q;
* ``support``: the fraction outside the class's support with its Clopper-Pearson interval;
* ``score_error``: the model's score error and training loss;
* ``profile``: where in noise level guidance lowers Q (the decrease formula's integrand).

Rows of several classes are pooled (``class = "all"``) with
:func:`guidelab.studies.pooling.pooled_rows` from the stored records, exactly as
``results.csv`` has them, and shown as their own curve and table. Settings (combinations of
swept keys other than w and class) get a section each; a study swept over ``model`` or
measuring the support also gets figures that compare its settings.

For d <= 2 the stored samples are drawn over the class-conditional density; for larger samples
(images: 64 numbers are an 8 x 8 digit) as a grid of images, one row per class and one column
group per w, the same noise in the same position of every group.

Layout read (only through :class:`guidelab.studies.store.ResultStore`): ``DIR/spec.toml`` (the
resolved spec), ``DIR/units/<unit_id>.parquet`` (one row per (unit, w)),
``DIR/samples/<unit_id>.parquet`` (``unit_id, class, w, sampler, row, x0 .. x{D-1}``) and
``DIR/run.json`` (when, where and how long the runs ran; "not recorded" for older folders).
Every part is optional: a missing column or file leaves its part of the page out with a note,
never an error. Every figure is a PNG made with matplotlib's Agg backend and embedded as a
``data:image/png;base64`` URI; the CSS is inline; the page loads nothing (no script, font,
style sheet or image from anywhere), so it opens from disk with no network. Tables are laid out
to fit a 1280 px window without horizontal scrolling (:mod:`guidelab.report.tables`); a
glossary defines every column shown. Every string from the data is HTML-escaped.
"""

from __future__ import annotations

import base64
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..studies.units import _freeze
from .figures import RULE_NAMES, reliability_figure, sample_cells, sample_grid_figure
from .glossary import glossary_html
from .plots import (
    _number,
    class_label,
    class_order,
    figure_png,
    q_by_setting_figure,
    q_vs_w_figure,
    support_figure,
)
from .profile import PROFILE_CAPTION, profile_figure, profiles_from_rows
from .scatter import MAX_SCATTER_W, DensityFn, pick_strengths, scatter_figure, spec_densities
from .tables import (
    class_grid_tables,
    class_table,
    escape,
    fit_table,
    fmt,
    is_numeric,
    is_reference,
    profile_table,
    table,
    td,
)

__all__ = ["write_report", "DensityFn"]

REFERENCE_SAMPLER = "exact_reverse"
"""The ``sampler`` of reference rows (the exact reverse kernel at w = 0)."""
POOLED = "all"

MAX_SERIES = 12
"""At most this many settings (combinations of swept keys other than w and class) get figures
and tables; the rest are listed in a note."""
MAX_SCATTER_CLASSES = 10
MAX_GRID_CLASSES = 10
"""Classes of a sample grid (image-like samples)."""
MAX_SHOWN_CLASSES = 20
"""Classes drawn in a Q(w) figure and given a table (the pooled rows always are); a study of
more classes (ImageNet's 1000) lists the rest in a note."""
MAX_PROVENANCE_ROWS = 300
MAX_CALIBRATIONS = 3
"""Distinct judges whose reliability diagrams are drawn."""
MAX_RUNS_SHOWN = 5

_PROVENANCE = ("seed", "sampler", "steps", "schedule", "rule", "strength_schedule", "trials",
               "dtype", "device", "guidelab_version")
_SERIES_FALLBACK = ("sampler", "schedule", "steps", "seed", "dtype")
_SAMPLER_KEYS = ("sampler", "steps", "schedule")

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
       sans-serif; margin: 0; color: #1d2329; background: #fafafa; line-height: 1.45; }
main { max-width: 1260px; margin: 0 auto; padding: 1.2em 2em 3em; background: #fff;
       box-sizing: border-box; }
h1 { font-size: 1.7em; margin: 0.3em 0 0.2em; }
h2 { font-size: 1.3em; margin-top: 1.8em; border-bottom: 2px solid #dde3e8;
     padding-bottom: 0.2em; }
h3 { font-size: 1.08em; margin: 1.4em 0 0.4em; }
h4 { font-size: 1em; margin: 1em 0 0.3em; }
p.lead { color: #44505c; white-space: pre-wrap; }
nav { font-size: 0.92em; margin: 0.8em 0; }
nav a { margin-right: 1.2em; color: #1f5f99; display: inline-block; }
table { border-collapse: collapse; margin: 0.4em 0 1em; font-size: 0.84em; max-width: 100%; }
th, td { border: 1px solid #d5dbe0; padding: 0.22em 0.5em; vertical-align: top; }
th { background: #eef2f5; text-align: left; font-weight: 600; white-space: normal;
     max-width: 11em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.wrap { white-space: normal; overflow-wrap: anywhere; min-width: 6em; }
td .sub { color: #55616d; font-size: 0.92em; }
tbody tr:nth-child(even) td { background: #f7f9fa; }
tr.unreliable td { background: #fff4e0 !important; }
tr.reference td { font-style: italic; }
td.bad { color: #b3261e; font-weight: 700; }
td.good { color: #1e7b34; }
table.facts th { width: 13em; max-width: none; }
table.facts td { overflow-wrap: anywhere; }
figure { margin: 0.6em 0 1.2em; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #e3e7ea; }
figcaption { font-size: 0.88em; color: #44505c; margin-top: 0.35em; max-width: 72em; }
.notes { background: #fff8e5; border-left: 4px solid #e0a800; padding: 0.5em 1em;
         font-size: 0.9em; }
.warnings { background: #fdecea; border-left: 4px solid #d93025; padding: 0.5em 1em;
            font-size: 0.9em; margin: 0.8em 0; overflow-wrap: anywhere; }
.warnings summary, details.more summary { cursor: pointer; }
details.more { margin: -0.4em 0 1.2em; font-size: 0.95em; }
details.more summary { color: #1f5f99; }
.legend { font-size: 0.86em; color: #44505c; }
dl.glossary { font-size: 0.9em; display: grid; grid-template-columns: 13em minmax(0, 1fr);
               column-gap: 1.2em; row-gap: 0.45em; }
dl.glossary dt { font-weight: 600; }
dl.glossary dd { margin: 0; color: #2f3942; }
pre { background: #f3f5f7; border: 1px solid #dde3e8; padding: 0.8em; font-size: 0.85em;
      white-space: pre-wrap; overflow-wrap: anywhere; }
.scroll { overflow-x: auto; max-width: 100%; }
"""


# ----------------------------------------------------------------------------- helpers

def _img(png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{escape(alt)}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def _value_text(key: str, value: Any) -> str:
    """A swept value as the page shows it: a table (a model's settings, as a dict or as the
    JSON a row holds) as its kind and main settings."""
    data = value
    if isinstance(value, str) and value.startswith("{"):
        try:
            data = json.loads(value)
        except ValueError:
            return value
    if isinstance(data, dict):
        data = dict(data)
        kind = data.pop("kind", data.pop("source", None))
        rest = ", ".join(f"{k} {fmt(v)}" for k, v in data.items()
                         if not isinstance(v, (dict, list)))
        if kind is None:
            return rest
        return f"{kind} ({rest})" if rest else str(kind)
    return fmt(value)


def _short_label(values: dict) -> str:
    """A setting's label for a legend: keys without their section (``model.eps`` -> ``eps``),
    and a lone ``model`` as its value."""
    if list(values) == ["model"]:
        return _value_text("model", values["model"])
    return ", ".join(f"{k.split('.')[-1]} = {_value_text(k, v)}" for k, v in values.items())


def _sweep_index(key: str, value: Any, sweep: dict) -> int:
    """Where ``value`` (as a row holds it) stands in ``sweep[key]``; after every listed
    value when it is not found."""
    listed = sweep.get(key)
    if not isinstance(listed, list):
        return 0
    for i, item in enumerate(listed):
        if _freeze(item) == value or _value_text(key, item) == _value_text(key, value):
            return i
    return len(listed)


def _finite(value: Any) -> float | None:
    x = _number(value)
    return x if x is not None and math.isfinite(x) else None


# ----------------------------------------------------------------------------- loading

@dataclass
class _Study:
    """What the results folder holds; ``notes`` collects the parts left out and why."""

    root: Path
    spec_text: str | None = None
    spec_data: dict | None = None
    rows: list[dict] = field(default_factory=list)
    pooled: list[dict] = field(default_factory=list)
    samples: dict[str, list] | None = None
    unit_files: int = 0
    runs: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def sweep(self) -> dict:
        sweep = (self.spec_data or {}).get("sweep")
        return sweep if isinstance(sweep, dict) else {}

    def columns(self) -> set[str]:
        return {k for r in self.rows + self.pooled for k, v in r.items() if v is not None}


def _load(root: Path) -> _Study:
    """What the folder holds, read through the results store (:class:`~guidelab.studies.
    store.ResultStore`, read-only): only files that pass its checks (and files that carry no
    guidelab metadata at all, shown unverified); every other file is a note. The rows pooled
    over classes are computed from the stored records."""
    import tomllib

    import pyarrow as pa

    from ..studies.store import ResultStore

    study = _Study(root)
    store = ResultStore(root, label="run_dir")
    try:
        study.spec_text = store.read_spec_text()
        if study.spec_text is None:
            study.notes.append("no spec.toml in the results folder: the study's description, "
                               "its spec, the pooled rows and the density contours are left "
                               "out.")
        else:
            study.spec_data = tomllib.loads(study.spec_text)
    except ValueError as error:  # unreadable, not UTF-8, not TOML
        study.notes.append(f"spec.toml could not be read ({error}); the study's "
                           f"description, the pooled rows and the density contours are left "
                           f"out.")
    study.runs = store.read_run_info()

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
    if study.rows and study.spec_data is not None:
        study.pooled = _pooled(study)

    tables = list(found.samples.values())
    if tables:
        try:
            table_ = pa.concat_tables(tables, promote_options="default")
            study.samples = table_.to_pydict()
        except (pa.ArrowException, ValueError) as error:
            study.notes.append(f"the sample files do not share a schema ({error}); the "
                               f"sample figures are left out.")
    return study


def _pooled(study: _Study) -> list[dict]:
    """The rows pooled over classes (:func:`guidelab.studies.pooling.pooled_rows`), or [] with
    a note when they cannot be computed. Only the recorded spec's structure is validated (no
    device check), so a report can be written on another machine than the run's."""
    from ..studies.pooling import pooled_rows
    from ..studies.spec import Spec

    try:
        return pooled_rows(Spec.model_validate(study.spec_data), study.rows)
    except Exception as error:  # noqa: BLE001 - any failure only leaves the pooled rows out
        study.notes.append(f"the rows pooled over classes could not be computed from the "
                           f"stored records ({type(error).__name__}: {error}); they are left "
                           f"out.")
        return []


# ----------------------------------------------------------------------------- structure

def _series_columns(study: _Study) -> list[str]:
    """Columns whose values split the main rows into settings (every swept key other than w
    and class that is a column, then provenance columns that vary)."""
    main = [r for r in study.rows if not is_reference(r)]
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
    values: dict
    label: str
    rows: list[dict]              # main rows and matching reference rows
    unit_ids: set[str]
    pooled: list[dict] = field(default_factory=list)

    @property
    def main(self) -> list[dict]:
        return [r for r in self.rows if not is_reference(r)]

    @property
    def all_rows(self) -> list[dict]:
        return self.rows + self.pooled


def _matches(row: dict, values: dict) -> bool:
    """A reference row (or a pooled reference row) belongs to a setting whose non-sampler
    values it shares (or lacks)."""
    return all(_samplerish(k) or row.get(k) is None or _freeze(row.get(k)) == v
               for k, v in values.items())


def _split_series(study: _Study, columns: list[str]) -> list[_Series]:
    main = [r for r in study.rows if not is_reference(r)]
    refs = [r for r in study.rows if is_reference(r)]
    groups: dict[tuple, list[dict]] = {}
    for row in main:
        groups.setdefault(tuple(_freeze(row.get(k)) for k in columns), []).append(row)
    if not main and refs:
        groups[tuple(None for _ in columns)] = []
    series = []
    def order(key: tuple) -> tuple:
        return tuple((_sweep_index(k, v, study.sweep), v is None, str(v))
                     for k, v in zip(columns, key, strict=True))

    for key in sorted(groups, key=order):
        values = dict(zip(columns, key, strict=True))
        rows = [r for r in refs if _matches(r, values)] + groups[key]
        pooled = [r for r in study.pooled
                  if (_matches(r, values) if is_reference(r)
                      else tuple(_freeze(r.get(k)) for k in columns) == key)]
        label = ", ".join(f"{k} = {_value_text(k, v)}" for k, v in values.items())
        series.append(_Series(key, values, label, rows, {r.get("unit_id") for r in rows},
                              pooled))
    return series


# ----------------------------------------------------------------------------- overview

def _duration(seconds: Any) -> str:
    s = _finite(seconds)
    if s is None:
        return "?"
    if s < 60:
        return f"{s:.1f} s"
    minutes, rest = divmod(int(round(s)), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    return f"{minutes // 60} h {minutes % 60} min"


def _run_text(run: dict) -> str:
    started = str(run.get("started", "?")).replace("T", " ").replace("+00:00", " UTC")
    return (f"{started}, {_duration(run.get('seconds'))} on {run.get('host', '?')}, "
            f"{fmt(run.get('units_computed'))} units computed "
            f"(guidelab {run.get('guidelab_version', '?')})")


def _overview(study: _Study) -> str:
    spec = study.spec_data or {}
    facts: list[tuple[str, Any]] = []
    if study.runs:
        last = study.runs[-1]
        facts.append(("run started (UTC)", str(last.get("started", "?"))
                      .replace("T", " ").replace("+00:00", "")))
        facts.append(("run duration", _duration(last.get("seconds"))))
        facts.append(("run host", last.get("host", "?")))
        facts.append(("units computed", last.get("units_computed")))
        if len(study.runs) > 1:
            earlier = study.runs[-MAX_RUNS_SHOWN:-1]
            more = len(study.runs) - 1 - len(earlier)
            facts.append(("earlier runs", "; ".join(_run_text(r) for r in reversed(earlier))
                          + (f"; and {more} more" if more > 0 else "")))
    else:
        facts.append(("run date", "not recorded (no run.json: the folder was written by an "
                                  "older guidelab or by hand)"))
    dist = spec.get("distribution")
    if isinstance(dist, dict):
        family = dist.get("family", "?")
        facts.append(("distribution", f"{family} {dist.get('name', '')}".strip()
                      if family == "builtin" else family))
    def swept(section: str) -> str:
        keys = [k for k in study.sweep if k == section or k.startswith(section + ".")]
        return f" (swept: {', '.join(keys)})" if keys else ""

    for section in ("data", "model", "judge"):
        value = spec.get(section)
        if isinstance(value, dict):
            kind = value.get("source", value.get("kind", "?"))
            facts.append((section, ", ".join([str(kind)] + [
                f"{k} {fmt(v)}" for k, v in value.items()
                if k not in ("source", "kind") and not isinstance(v, (dict, list))][:6])
                + swept(section)))
    guidance = spec.get("guidance")
    if isinstance(guidance, dict):
        strength = guidance.get("strength")
        kind = strength.get("kind") if isinstance(strength, dict) else None
        rule = str(guidance.get("rule", "?"))
        text = "rule swept (sweep.guidance.rule)" if "guidance.rule" in study.sweep \
            else RULE_NAMES.get(rule, rule)
        facts.append(("guidance", text + (f", strength {kind}" if kind else "")))
    sampler = spec.get("sampler")
    if isinstance(sampler, dict):
        text = f"{sampler.get('name', '?')}, schedule {sampler.get('schedule', '?')}, " \
               f"T = {sampler.get('steps', '?')}"
        if sampler.get("options"):
            text += f", options {fmt(sampler.get('options'))}"
        facts.append(("sampler", text))
    for key in ("trials", "seed", "dtype", "device"):
        if key in spec:
            facts.append((key, spec[key]))
    if isinstance(spec.get("metrics"), list):
        facts.append(("metrics", ", ".join(str(m) for m in spec["metrics"])))
    for key, values in study.sweep.items():
        facts.append((f"sweep.{key}", "; ".join(_value_text(key, v) for v in values)
                      if isinstance(values, list) else values))
    reference = spec.get("reference")
    if isinstance(reference, dict) and reference.get("enabled"):
        facts.append(("reference", f"exact reverse kernel at w = 0, "
                                   f"{reference.get('steps', '?')} steps"))
    units = study.unit_files
    expected = _expected_units(study)
    facts.append(("units finished", f"{units} of {expected}" if expected else units))
    facts.append(("rows", f"{len(study.rows)} (and {len(study.pooled)} pooled over classes)"
                  if study.pooled else len(study.rows)))
    versions = sorted({str(r["guidelab_version"]) for r in study.rows
                       if r.get("guidelab_version") is not None})
    if versions:
        facts.append(("guidelab version", ", ".join(versions)))
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(fmt(v))}</td></tr>" for k, v in facts)
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


def _provenance_table(study: _Study) -> tuple[str, list[str]]:
    by_unit: dict[str, list[dict]] = {}
    for row in study.rows:
        by_unit.setdefault(str(row.get("unit_id")), []).append(row)
    swept = [k for k in study.sweep if k not in ("w", "class") and k not in _PROVENANCE
             and any(k in r for r in study.rows)]
    columns = ["class", *[k for k in _PROVENANCE if any(k in r for r in study.rows)], *swept]
    constant = {k: next(iter(v)) for k in columns
                if len(v := {fmt(r.get(k)) for r in study.rows}) == 1 and k != "class"}
    columns = [k for k in columns if k not in constant]
    headers = [("unit", None), *[(k, None) for k in columns], ("strengths", None), ("n", None)]
    body = []
    notes = []
    for i, (unit, rows) in enumerate(sorted(by_unit.items())):
        if i == MAX_PROVENANCE_ROWS:
            notes.append(f"provenance of {len(by_unit) - i} more units is left out.")
            break
        cells = [f'<td class="wrap">{escape(unit)}</td>']
        for key in columns:
            values = sorted({_value_text(key, r.get(key)) for r in rows})
            text = values[0] if len(values) == 1 else ", ".join(values)
            cells.append(f'<td class="wrap">{escape(text)}</td>')
        ns = sorted({fmt(r.get("n", r.get("support_n"))) for r in rows})
        cells += [td(len(rows)), td(None, text=", ".join(ns) if len(ns) > 1 else ns[0])]
        body.append(f"<tr>{''.join(cells)}</tr>")
    shared = ""
    if constant:
        shared = ('<p class="legend">The same for every unit: '
                  + escape("; ".join(f"{k} = {v}" for k, v in constant.items())) + "</p>")
    return shared + table(headers, body), notes


def _warnings(study: _Study) -> str:
    items = set()
    for row in study.rows + study.pooled:
        text = row.get("warnings")
        if isinstance(text, str):
            for part in text.split(" | "):
                if part.strip():
                    items.add((str(row["class"]), float(row["w"]),
                               str(row.get("sampler", "")), part.strip()))
    nonfinite = sum(int(n) for r in study.rows if is_numeric(n := r.get("n_nonfinite")))
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
            + "".join(f"<li>{escape(line)}</li>" for line in shown) + "</ul></details>")


# ----------------------------------------------------------------------------- study-wide

def _judge_section(study: _Study) -> tuple[str, list[str]]:
    """The judge's reliability diagrams (one per distinct calibration) and real data's Q."""
    calibrations: dict[str, dict] = {}
    for row in study.rows:
        text = row.get("calibration")
        if isinstance(text, str) and text.strip() and text not in calibrations:
            try:
                calibrations[text] = json.loads(text)
            except ValueError:
                continue
    if not calibrations:
        return "", []
    notes = []
    out = ['<h2 id="judge">Judge calibration</h2>',
           "<p>Every Q and E[p] on this page is read through the judge p(c|y). Its reliability "
           "on held-out real data (never seen by the model or the judge): how often the "
           "predicted probability comes true, bin by bin.</p>"]
    items = list(calibrations.values())
    if len(items) > MAX_CALIBRATIONS:
        notes.append(f"{len(items)} distinct judge calibrations; the first "
                     f"{MAX_CALIBRATIONS} are drawn.")
    for data in items[:MAX_CALIBRATIONS]:
        try:
            png = figure_png(reliability_figure(data))
        except (KeyError, TypeError, ValueError) as error:
            notes.append(f"a reliability diagram could not be drawn ({error}).")
            continue
        caption = (f"Reliability diagrams of the judge on n = {fmt(data.get('n'))} held-out "
                   f"samples ({data.get('binning', 'equal-width bins')}). Left: top-label "
                   f"(confidence max_c p(c|y) against accuracy), ECE = "
                   f"{fmt(data.get('ece_top'), 3)}; right: classwise (every p(c|y) against "
                   f"the frequency of class c), ECE = {fmt(data.get('ece_classwise'), 3)}. "
                   f"Dashed: perfect calibration; below: the count of each bin (log scale). "
                   f"Judge accuracy {fmt(data.get('accuracy'))}, log loss "
                   f"{fmt(data.get('log_loss'))} nats.")
        out.append(_img(png, "reliability diagrams of the judge", caption))
    real = {}
    for row in study.rows:
        if _number(row.get("real_q")) is not None and row.get("class") not in real:
            real[row.get("class")] = row
    if real:
        body = ["<tr>" + td(class_label(c)) + td(r.get("real_n")) + td(r.get("real_q"))
                + td(r.get("real_p_mean")) + "</tr>"
                for c, r in sorted(real.items(), key=lambda kv: class_order(kv[0]))]
        out.append("<h3>Real held-out data through the judge</h3>")
        out.append(table([("class", None), ("real_n", "held-out samples of the class"),
                          ("real_q", "E[1/p(c|x)] over them"),
                          ("real E[p]", "E[p(c|x)] over them")], body, css="compact"))
    return "".join(out), notes


def _groups(series: list[_Series]) -> list[tuple[str, list[dict]]]:
    return [(_short_label(s.values) or "all rows",
             s.main + [r for r in s.pooled if not is_reference(r)]) for s in series]


def _across_section(study: _Study, series: list[_Series], columns: list[str]
                    ) -> tuple[str, list[str]]:
    """Figures comparing the settings: Q(w) per model (a study swept over ``model``) and the
    fraction outside the support per setting."""
    parts: list[str] = []
    notes: list[str] = []
    rows = study.rows + study.pooled
    has_q = any(_number(r.get("q_mean")) is not None for r in rows)
    if "model" in columns and has_q and len(series) > 1:
        fig = q_by_setting_figure(_groups(series), title="Q(w) per model")
        parts.append(_img(figure_png(fig), "Q(w) per model",
                          "Q(w) = E[1/p(c|Y)] with one curve per model (legend), one panel per "
                          "class and for all classes pooled; bars: the interval for Q; a tick "
                          "with an upward arrow: lower bound only (heavy tail); open markers: "
                          "the tail diagnosis found the interval unreliable; dashed: 1/p(c), "
                          "the value of exact unguided draws. Every model uses the same noise "
                          "row by row."))
        entries = []
        for s in series:
            fits = [r for r in s.main if _number(r.get("score_error")) is not None
                    or _number(r.get("training_loss")) is not None]
            if fits:
                entries.append((s.label, fits[0]))
        if entries:
            parts.append("<h3>Model fit</h3>")
            parts.append(fit_table(entries))
    if any(_number(r.get("outside")) is not None for r in rows):
        fig = support_figure(_groups(series), title="mass outside the support")
        parts.append(_img(figure_png(fig), "fraction outside the support against w",
                          "The fraction of samples outside their class's support against w, one "
                          "curve per setting (legend: the perturbation's size eps and kind), "
                          "one panel per class and for all classes pooled; bars: the exact "
                          "Clopper-Pearson interval. Exact scores keep every sample inside at "
                          "every w; a score error lets samples leave, and guidance amplifies "
                          "it."))
    if not parts:
        return "", notes
    return ('<h2 id="across">Across settings</h2>' + "".join(parts)), notes


# ----------------------------------------------------------------------------- per setting

def _q_caption(rows: list[dict], pooled: bool) -> str:
    has = {k: any(_finite(r.get(k)) is not None for r in rows)
           for k in ("grid_q", "inv_prior", "p_mean")}
    lower = any(_number(r.get("q_high")) == math.inf for r in rows)
    levels = {_number(r.get("level")) for r in rows} - {None}
    level = f"{100 * levels.pop():g} % " if len(levels) == 1 else ""
    text = ("Left: Q(w) = E[1/p(c|Y)] per class (colours"
            + ("; black: all classes pooled" if pooled else "") + "), the Monte Carlo "
            f"estimate with its {level}interval as bars; open markers: the tail diagnosis "
            "found the interval unreliable.")
    if lower:
        text += (" A tick with an upward arrow is a one-sided interval [lower, \u221e): a lower "
                 "bound only (heavy tail), the mean itself is not reliable.")
    if has["grid_q"]:
        text += (" Dotted diamonds (\u201cexact grid\u201d): Q of the sampler's exact output "
                 "law propagated on a grid, with its quadrature error as bars; it has no Monte "
                 "Carlo error.")
    if has["inv_prior"]:
        text += " Dashed lines: 1/p(c), the value of exact unguided draws."
    if any(is_reference(r) for r in rows):
        text += " Open squares: the exact reverse kernel at w = 0."
    if has["p_mean"]:
        text += " Right: E[p(c|Y)]."
    return text + (" w on a symmetric-log axis (linear up to the smallest positive w); CFG "
                   "scale = 1 + w.")


def _fit_entries(series: _Series) -> list[tuple[str, dict]]:
    by_class: dict = {}
    for r in series.main:
        if (_number(r.get("score_error")) is not None
                or _number(r.get("training_loss")) is not None) and r["class"] not in by_class:
            by_class[r["class"]] = r
    if not by_class:
        return []
    keys = ("score_error", "score_error_uncond", "training_loss")
    values = {tuple(fmt(r.get(k), 6) for k in keys) for r in by_class.values()}
    if len(values) == 1:
        return [("every class (one model)", next(iter(by_class.values())))]
    return [(class_label(c), r) for c, r in sorted(by_class.items(),
                                                   key=lambda kv: class_order(kv[0]))]


def _profile_section(series: _Series) -> tuple[str, list[str]]:
    rows = [r for r in series.main if isinstance(r.get("profile"), str) and r["profile"]]
    if not rows:
        return "", []
    try:
        profiles = profiles_from_rows(rows)
        png = figure_png(profile_figure(profiles))
    except (KeyError, TypeError, ValueError) as error:
        return "", [f"the guidance-effect profile could not be drawn ({error})."]
    out = ["<h3>Where guidance acts: the decrease profile</h3>",
           _img(png, "guidance-effect profile", PROFILE_CAPTION),
           profile_table(list(zip(profiles, rows, strict=True)))]
    return "".join(out), []


def _sample_section(study: _Study, series: _Series, density_for_unit, density_note,
                    density: DensityFn | None) -> tuple[str, list[str]]:
    samples = study.samples
    if not samples:
        return "", []
    where = f" ({series.label})" if series.label else ""
    missing = [k for k in ("class", "w", "x0") if k not in samples]
    if missing:
        return "", [f"the sample files lack {', '.join(missing)}: sample figures left out."]
    unit_ids = np.asarray(samples.get("unit_id", [None] * len(samples["w"])), dtype=object)
    sampler = np.asarray(samples.get("sampler", [None] * len(samples["w"])), dtype=object)
    keep = np.array([u in series.unit_ids for u in unit_ids]) if "unit_id" in samples \
        else np.ones(len(unit_ids), dtype=bool)
    keep &= sampler != REFERENCE_SAMPLER
    if "unit_id" in samples and series.unit_ids:
        ref_units = {r.get("unit_id") for r in series.rows if is_reference(r)}
        keep &= np.array([u not in ref_units for u in unit_ids])
    if not keep.any():
        return "", []
    if "x2" in samples:
        return _sample_grid_section(samples, keep, series)
    return _scatter_section(samples, keep, series, density_for_unit, density_note, density,
                            where)


def _sample_grid_section(samples: dict, keep: np.ndarray, series: _Series
                         ) -> tuple[str, list[str]]:
    notes = []
    where = f" ({series.label})" if series.label else ""
    try:
        classes, strengths, cells, rows = sample_cells(samples, keep=keep)
    except (ValueError, KeyError, TypeError) as error:
        return "", [f"the sample grid is left out{where}: {error}"]
    if len(classes) > MAX_GRID_CLASSES:
        notes.append(f"the sample grid shows the first {MAX_GRID_CLASSES} of {len(classes)} "
                     f"classes{where}.")
        classes = classes[:MAX_GRID_CLASSES]
    rules = {str(r.get("guidance.rule", r.get("rule"))) for r in series.main
             if r.get("guidance.rule", r.get("rule")) is not None}
    rule = rules.pop() if len(rules) == 1 else None
    title = RULE_NAMES.get(rule, f"guidance rule {rule}") if rule else (series.label or None)
    if rule and series.label:
        others = [f"{k} = {_value_text(k, v)}" for k, v in series.values.items()
                  if k not in ("guidance.rule", "rule")]
        if others:
            title += " \u2014 " + ", ".join(others)
    fig = sample_grid_figure(cells, classes, strengths, title=title)
    size = next(iter(cells.values())).shape[1] if cells else 0
    from .figures import image_layout

    h, w, ch = image_layout(size)
    shape = f"{h} \u00d7 {w} images" + (" (colour)" if ch == 3 else "") if h > 1 \
        else f"strips of {w} numbers"
    caption = (f"Stored samples of the guided sampler{where}: one row per class, one group of "
               f"columns per strength w; within a group, rows 0, 1, ... of the unit, so the "
               f"same position in every group is the same noise (coupled rows) and the groups "
               f"show what guidance does to it. Each sample of {size} numbers (x0 .. "
               f"x{size - 1}) is drawn as {shape}, dark = high, on one scale for the figure. "
               f"CFG = classifier-free guidance (s(x|c) + w (s(x|c) \u2212 s(x)), one "
               f"conditional network); \u201cclassifier\u201d = classifier guidance with the "
               f"noisy classifier (s(x|c) + w \u2207 log p_t(c|x), a classifier trained on noised "
               f"data). w = 0 is unguided under either rule.")
    return ("<h3>Samples</h3>" + _img(figure_png(fig), f"sample grid{where}", caption),
            notes)


def _scatter_section(samples: dict, keep: np.ndarray, series: _Series, density_for_unit,
                     density_note, density: DensityFn | None, where: str
                     ) -> tuple[str, list[str]]:
    index = np.flatnonzero(keep)  # [M]
    dim = 2 if "x1" in samples else 1
    w_values = np.asarray(samples["w"], dtype=np.float64)[index]
    classes_all = sorted({int(c) for c in np.asarray(samples["class"])[index]})
    classes = classes_all[:MAX_SCATTER_CLASSES]
    notes = []
    if len(classes_all) > len(classes):
        notes.append(f"scatter plots show the first {len(classes)} of {len(classes_all)} "
                     f"classes{where}.")
    strengths = pick_strengths(w_values.tolist(), MAX_SCATTER_W)
    class_unit = {}
    for r in series.rows:
        if not is_reference(r):
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
        png, more = scatter_figure(samples, index, classes, strengths, dim, density_of)
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


def _series_section(study: _Study, series: _Series, index: int, columns: list[str],
                    density_for_unit, density_note: str | None,
                    density: DensityFn | None) -> tuple[str, list[str]]:
    notes: list[str] = []
    where = f" ({series.label})" if series.label else ""
    out = [f'<h2 id="s{index}">Setting {index + 1}{escape(where)}</h2>' if series.label
           else f'<h2 id="s{index}">Results</h2>']
    classes = sorted({r["class"] for r in series.rows}, key=class_order)
    if len(classes) > MAX_SHOWN_CLASSES:
        notes.append(f"{len(classes)} classes{where}: the figures and tables show the first "
                     f"{MAX_SHOWN_CLASSES} and the rows pooled over all of them.")
        classes = classes[:MAX_SHOWN_CLASSES]
    shown = set(classes)
    rows = [r for r in series.rows if r["class"] in shown] + series.pooled
    main = [r for r in series.main if r["class"] in shown]
    skip = (set(columns) | set(study.sweep)) - {"w", "class"}
    has_q = any(_number(r.get("q_mean")) is not None for r in rows)
    if has_q:
        png = figure_png(q_vs_w_figure(rows, title=series.label or None))
        out.append(_img(png, f"Q(w) and E[p](w){where}", _q_caption(rows, bool(series.pooled))))
    elif not any(_number(r.get("outside")) is not None for r in rows):
        notes.append(f"no q_mean column{where}: the Q(w) figure is left out.")
    fits = _fit_entries(series)
    if fits:
        out.append('<h4>Model fit (score error and training loss)</h4>')
        out.append(fit_table(fits))
    if main:
        grid = class_grid_tables(main + [r for r in series.pooled if not is_reference(r)])
        if grid:
            out.append("<h3>Summary over classes</h3>")
            out.append(grid)
            out.append('<p class="legend">Rows shaded amber hold a class whose interval is not '
                       "reliable; red: an unbounded or unreliable interval "
                       "([lower, \u221e): lower bound only).</p>")
    if series.pooled:
        count = max((int(r.get("pooled_classes") or 0) for r in series.pooled), default=0)
        out.append(f"<h3>Pooled over classes (class \u201call\u201d, {count} classes)</h3>")
        dominance = any(isinstance(r.get("dom_verdict"), str) for r in series.pooled)
        out.append("<p class=\"legend\">Every sample of every class together, each judged "
                   "for its own class (the merge of the stored records, as in results.csv)"
                   + ("; the dominance verdict compares the pooled p(c|Y) at w with w = 0 on "
                      "coupled rows" if dominance else "") + ".</p>")
        out.append(class_table(series.pooled, skip=skip))
    profile, more = _profile_section(series)
    out.append(profile)
    notes += [m + where for m in more]
    samples, more = _sample_section(study, series, density_for_unit, density_note, density)
    out.append(samples)
    notes += more
    out.append("<h3>Per class: measurements and tail diagnosis</h3>")
    for c in classes:
        class_rows = [r for r in series.rows if r["class"] == c]
        out.append(f"<h4>Class {escape(c)}</h4>")
        out.append(class_table(class_rows, skip=skip))
    return "".join(out), notes


# ----------------------------------------------------------------------------- page

def _intro(study: _Study) -> str:
    """What the study measures, in a paragraph that fits its metrics."""
    columns = study.columns()
    text = []
    if "q_mean" in columns or not columns:
        text.append(
            "Q(w) = E[1/p(c|Y)] over samples Y of the sampler guided towards class c with "
            "strength w (w = 0 unguided; CFG scale = 1 + w). Exact unguided draws give "
            "Q = 1/p(c); guidance of strength w &gt; 0 lowers Q (Li &amp; Jiao) although "
            "p(c|Y) need not rise for every sample (\u201cp down\u201d: the fraction of coupled "
            "rows whose p(c|Y) fell against w = 0). The tail diagnosis (Pareto k-hat of the "
            "terms 1/p(c|Y) against its threshold) decides whether Q's interval is reliable.")
    if "outside" in columns:
        text.append(
            "The support metric counts the samples of the sampler guided towards class c with "
            "strength w (w = 0 unguided; CFG scale = 1 + w) that fall outside the class's "
            "support, with an exact Clopper-Pearson interval: exact scores keep every sample "
            "inside, a score error lets samples leave and guidance amplifies it.")
    text.append("Every column is defined in the <a href=\"#glossary\">glossary</a>.")
    return "<p>" + " ".join(text) + "</p>"


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
        seen: set[tuple] = set()
        for r in s.main:
            key = (r["class"], float(r["w"]))
            if key in seen:
                notes.append(f"several rows share class {r['class']} and w = {r['w']:g}"
                             + (f" ({s.label})" if s.label else "") + "; the figure and "
                             "tables mix them (a swept key may be missing from the rows).")
                break
            seen.add(key)
    density_for_unit, density_note = (None, None)
    if density is None and study.samples:
        density_for_unit, density_note = spec_densities(study.spec_data, study.sweep)
    judge, more = _judge_section(study)
    notes += more
    across, more = _across_section(study, series, columns)
    notes += more
    for i, s in enumerate(series):
        section, more = _series_section(study, s, i, columns, density_for_unit, density_note,
                                        density)
        sections.append(section)
        notes += more
    provenance, more = _provenance_table(study) if study.rows else ("", [])
    notes += more
    glossary_columns = study.columns()
    if any(r.get("rule") == "classifier" or r.get("guidance.rule") == "classifier"
           for r in study.rows):
        glossary_columns.add("guidance.rule")

    nav = ['<a href="#overview">Overview</a>']
    if judge:
        nav.append('<a href="#judge">Judge</a>')
    if across:
        nav.append('<a href="#across">Across settings</a>')
    nav += [f'<a href="#s{i}">{escape(s.label or "Results")}</a>' for i, s in enumerate(series)]
    nav += ['<a href="#glossary">Glossary</a>', '<a href="#provenance">Provenance</a>',
            '<a href="#spec">Spec</a>']
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(name)}: guidelab report</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f"<h1>{escape(name)}</h1>",
        f'<p class="lead">{escape(description)}</p>' if description else "",
        f"<nav>{''.join(nav)}</nav>",
        '<h2 id="overview">Overview</h2>',
        _intro(study),
        _overview(study),
        _warnings(study),
    ]
    if notes:
        parts.append('<div class="notes"><strong>Parts left out or to read with care</strong>'
                     "<ul>" + "".join(f"<li>{escape(n)}</li>" for n in dict.fromkeys(notes))
                     + "</ul></div>")
    parts += [judge, across]
    parts += sections
    parts.append('<h2 id="glossary">Glossary</h2>')
    parts.append("<p>What each column and mark means, with its units (probabilities and "
                 "ratios are dimensionless; entropies and KL divergences are in nats).</p>")
    parts.append(glossary_html(glossary_columns))
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
        parts.append(f"<pre>{escape(study.spec_text)}</pre>")
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

