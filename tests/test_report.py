"""The HTML report of a results folder: structure, escaping, tolerance, and rendering.

The page must be self-contained: every image is a PNG data URI that decodes (checked here by
the PNG signature and IHDR header, and by PIL), nothing is loaded from anywhere (no script,
link, font or remote URL), and every string from the data is escaped. Headless Chromium (Debian's
``chromium``; ``.ci/run`` installs it) renders a copy of the page at 1280 px wide with an
appended checker script that opens every ``<details>`` and records, for every image, whether it
decoded (``complete && naturalWidth > 0``) and its box on the page, the page's scroll width
against the window's, and every table's scroll width against its container's; the test reads
that back from the dumped DOM. The Chromium tests skip only when no Chromium binary is found
outside CI (``CI=true`` makes a missing browser a failure).

The built-in studies run here at tiny sizes (smoke; li-jiao-1d with an exact grid and a
profile; li-jiao-digits with tiny training; support-leak) and each report is checked: its
figures decode, it has the glossary, the run's date, the rows pooled over classes and no
horizontal scroll. The figures' own data are checked in ``test_report_figures.py``.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from guidelab.report import write_report

# one worker when the suite is split over processes (pytest -n): the built-in studies
# run once for these tests and the CLI's
pytestmark = pytest.mark.xdist_group("built_in")

TINY_SPEC = """
name = "tiny-2d"
description = "Two classes in 2-D: <b>bold</b> & \\"quoted\\" <script>alert(1)</script>"
trials = 64
seed = 3
keep_samples = 64
metrics = ["class_probability"]

[distribution]
family = "gaussian_mixture"
means = [[-1.0, 0.0], [1.0, 0.5], [0.0, 1.0]]
covariances = [0.4, 0.3, 0.5]
weights = [0.5, 0.2, 0.3]
labels = [0, 1, 1]

[sampler]
name = "ddpm_type"
schedule = "linear"
steps = 10

[sweep]
w = [0.0, 1.0, 4.0]

[reference]
enabled = true
steps = 5
"""

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- helpers

class _Page(HTMLParser):
    """Every tag with its attributes, the text of <pre> and of the whole page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.pre: list[str] = []
        self._in_pre = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_pre = self._in_pre or tag == "pre"

    def handle_endtag(self, tag):
        if tag == "pre":
            self._in_pre = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_pre:
            self.pre.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, which must follow the PNG signature."""
    assert data[:8] == PNG_SIGNATURE, "not a PNG (signature)"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13, "first chunk is not IHDR"
    return struct.unpack(">II", data[16:24])


def _check_images(page: _Page) -> list[tuple[int, int]]:
    """Every <img> is a PNG data URI whose header and pixels decode; returns their sizes."""
    images = [attrs for tag, attrs in page.tags if tag == "img"]
    sizes = []
    for attrs in images:
        src = attrs.get("src", "")
        assert src.startswith("data:image/png;base64,"), src[:60]
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        width, height = _png_size(data)
        assert width > 0 and height > 0
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # decodes every pixel
            assert image.size == (width, height)
        assert attrs.get("alt")
        sizes.append((width, height))
    return sizes


def _check_self_contained(path: Path, page: _Page) -> None:
    """Nothing is fetched: no script, link, frame or object; every src/href is a data URI or
    an anchor; the CSS has no url() or @import."""
    for tag, attrs in page.tags:
        assert tag not in ("script", "link", "iframe", "object", "embed", "base"), tag
        for name in ("src", "href", "srcset", "poster", "data", "action"):
            if name in attrs:
                value = attrs[name] or ""
                assert value.startswith(("data:", "#")), f"<{tag} {name}={value[:60]}>"
    text = path.read_text(encoding="utf-8")
    style = "".join(re.findall(r"<style>(.*?)</style>", text, flags=re.S))
    assert "url(" not in style and "@import" not in style and "@font-face" not in style


def _runner_available() -> bool:
    try:
        from guidelab.studies.run import run_spec  # noqa: F401
    except ImportError:
        return False
    return True


# ----------------------------------------------------------------------------- stores

def _mixture_rows() -> tuple[list[dict], dict]:
    """A hand-made store in the runner's layout: 2 classes x 3 strengths plus a reference,
    with an unbounded interval, an extra column and a hostile string."""
    rows = []
    inv_prior = {0: 2.0, 1: 2.0}
    for c in (0, 1):
        for w, q, khat in ((0.0, 2.1, 0.62), (1.0, 1.4, 0.3), (4.0, 1.05, 0.1)):
            heavy = khat > 0.6
            rows.append({
                "class": c, "w": w, "n": 64, "q_mean": q + 0.1 * c, "q_low": q - 0.1,
                "q_high": math.inf if heavy else q + 0.1, "q_top_share": 0.02,
                "p_mean": 1 / q, "accuracy": 0.9, "frac_p_decreased": None if w == 0 else 0.05,
                "inv_prior": inv_prior[c], "sampler": "ddpm_type", "steps": 10, "q_se": 0.05,
                "pareto_khat": khat, "khat_threshold": 0.55, "q_reliable": not heavy,
                "interval_method": "lower bound only (k-hat > threshold)" if heavy
                else "normal", "n_nonfinite": 0, "level": 0.95,
                "warnings": "tail <heavy> & 'odd'" if heavy else "",
                "grid_q": 2.0 - 0.2 * w, "seed": 0, "schedule": "linear", "dtype": "float32",
                "device": "cpu", "guidelab_version": "0.1.0", "unit_id": f"c{c}-abc",
                "record_class_probability": "{}"})
        rows.append(dict(rows[-3], sampler="exact_reverse", steps=5, q_mean=2.0, q_low=1.9,
                         q_high=2.1, q_reliable=True, unit_id=f"ref-c{c}-abc", w=0.0))
    rng = np.random.default_rng(0)
    samples = {"unit_id": [], "class": [], "w": [], "sampler": [], "row": [], "x0": [],
               "x1": []}
    for c in (0, 1):
        for w in (0.0, 1.0, 4.0):
            x = rng.normal(size=(40, 2)) + np.array([2 * c - 1, 0.0])
            samples["unit_id"] += [f"c{c}-abc"] * 40
            samples["class"] += [c] * 40
            samples["w"] += [w] * 40
            samples["sampler"] += ["ddpm_type"] * 40
            samples["row"] += list(range(40))
            samples["x0"] += x[:, 0].tolist()
            samples["x1"] += x[:, 1].tolist()
    return rows, samples


def _write_store(root: Path, rows: list[dict], samples: dict | None, spec: str | None) -> Path:
    (root / "units").mkdir(parents=True)
    for unit in sorted({r["unit_id"] for r in rows}):
        pq.write_table(pa.Table.from_pylist([r for r in rows if r["unit_id"] == unit]),
                       root / "units" / f"{unit}.parquet")
    if samples is not None:
        (root / "samples").mkdir()
        pq.write_table(pa.table(samples), root / "samples" / "c0-abc.parquet")
    if spec is not None:
        (root / "spec.toml").write_text(spec)
    return root


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    """A tiny study run by the real runner (2-D, 2 classes, 3 strengths, a reference)."""
    if not _runner_available():
        pytest.skip("the studies runner is not available")
    from guidelab.studies.run import run_spec

    root = tmp_path_factory.mktemp("study")
    (root / "tiny.toml").write_text(TINY_SPEC)
    run_spec(root / "tiny.toml", root / "out", progress=False, log=lambda _: None)
    return root / "out"


@pytest.fixture(scope="module")
def real_report(real_run) -> Path:
    return write_report(real_run)


# ----------------------------------------------------------------------------- structure

def test_real_run_report_structure(real_run, real_report):
    assert real_report == real_run / "report.html"
    page = _parse(real_report)
    _check_self_contained(real_report, page)
    sizes = _check_images(page)
    assert len(sizes) == 2  # the Q(w)/E[p] figure and the samples over contours
    text = " ".join(page.text)
    assert "Class 0" in text and "Class 1" in text and "k-hat" in text
    # the spec is shown as it is recorded, escaped (the parser gives back the original text)
    assert "".join(page.pre).strip() == (real_run / "spec.toml").read_text().strip()
    # the description's markup is text, not markup
    assert not any(tag in ("b", "script") for tag, _ in page.tags)
    assert "<script>alert(1)</script>" in text
    # contours came from the spec's distribution: no note says they are missing
    assert "no density" not in text and "could not be evaluated" not in text
    # every measured Q appears in the tables, formatted as the page formats numbers
    rows = pa.concat_tables([pq.read_table(p) for p in (real_run / "units").glob("*.parquet")],
                            promote_options="default").to_pylist()
    assert len(rows) == 2 * 3 + 2
    for row in rows:
        assert f"{row['q_mean']:.4g}" in text, row
        assert f"{row['pareto_khat']:.3g}" in text, row


def test_pooled_rows_are_shown(real_run, real_report):
    """The rows pooled over classes (class "all") are in the tables: with equal trials per
    class the pooled Q is the mean of the classes' Q (computed here from the unit files), and
    the pooled reference the mean of 1/p(c)."""
    rows = [r for p in (real_run / "units").glob("*.parquet")
            for r in pq.read_table(p).to_pylist()]
    text = real_report.read_text()
    assert "Pooled over classes" in text and "all classes (pooled)" in text
    for sampler in ("ddpm_type", "exact_reverse"):
        for w in {r["w"] for r in rows if r["sampler"] == sampler}:
            at_w = [r for r in rows if r["w"] == w and r["sampler"] == sampler]
            assert len({r["n"] for r in at_w}) == 1 and len(at_w) == 2
            pooled = float(np.mean([r["q_mean"] for r in at_w]))
            assert f">{pooled:.4g}<" in text or f">{pooled:.4g} " in text, (sampler, w)
    inv_prior = float(np.mean([r["inv_prior"] for r in rows if r["sampler"] == "ddpm_type"
                               and r["w"] == 0]))
    assert f"1/p(c) = {inv_prior:.4g}" in text


def test_synthetic_store_escaping_extras_and_unbounded(tmp_path):
    rows, samples = _mixture_rows()
    spec = TINY_SPEC.replace("tiny-2d", "hand-made <i>store</i>")
    root = _write_store(tmp_path / "run", rows, samples, spec)
    seen = []

    def density(x, c):
        seen.append((x.shape, c))
        return -0.5 * np.sum((x - np.array([2 * c - 1, 0.0])) ** 2, axis=1)  # [N]

    path = write_report(root, out=tmp_path / "elsewhere" / "page.html", density=density)
    assert path == tmp_path / "elsewhere" / "page.html" and not (root / "report.html").exists()
    page = _parse(path)
    _check_self_contained(path, page)
    assert len(_check_images(page)) == 2
    assert {c for _, c in seen} == {0, 1} and all(s[1] == 2 for s, _ in seen)
    text = " ".join(page.text)
    raw = path.read_text()
    assert "<i>" not in raw and "&lt;i&gt;store&lt;/i&gt;" in raw
    assert "tail <heavy> & 'odd'" in text and "tail <heavy>" not in raw
    assert "grid Q \u00b1 err" in text  # the exact grid column is shown
    assert "\u221e) lower bound only" in text
    assert "not recorded" in text  # no run.json: a hand-made folder
    assert raw.count('class="unreliable"') >= 2  # the heavy rows of both classes
    assert "exact_reverse (reference)" in text


def test_a_model_sweep_gets_q_per_model_and_the_model_fit(tmp_path):
    """A hand-made store swept over ``model`` (the learned-vs-exact layout: a JSON column):
    a Q(w) figure with one curve per model, and the score error and training loss of each."""
    base, _ = _mixture_rows()
    models = {"exact": ('{"kind": "exact"}', 0.0, None),
              "trained": ('{"kind": "trained", "architecture": "mlp", "hidden": 32}', 0.123,
                          0.4567)}
    rows = []
    for name, (text, error, loss) in models.items():
        for row in base:
            if row["sampler"] == "exact_reverse":
                continue
            first = row["w"] == 0.0
            rows.append(dict(row, model=text, unit_id=f"{row['unit_id']}-{name}",
                             score_error=error if first else None,
                             training_loss=loss if first else None))
    spec = TINY_SPEC.replace("w = [0.0, 1.0, 4.0]", "w = [0.0, 1.0, 4.0]\nmodel = "
                             '[{ kind = "exact" }, { kind = "trained", architecture = "mlp", '
                             "hidden = 32 }]")
    root = _write_store(tmp_path / "run", rows, None, spec)
    path = write_report(root)
    page = _parse(path)
    assert len(_check_images(page)) == 1 + 2  # Q per model, then Q(w) per setting
    alts = [attrs.get("alt") for tag, attrs in page.tags if tag == "img"]
    assert alts[0] == "Q(w) per model"
    text = " ".join(page.text)
    assert "Across settings" in text and "Model fit" in text
    assert "trained (architecture mlp, hidden 32)" in text
    assert "0.4567" in text and "0.123" in text  # training loss and score error
    assert text.index("model = exact") < text.index("model = trained")  # the sweep's order


def test_missing_columns_and_parts_are_notes_not_errors(tmp_path):
    rows, _ = _mixture_rows()
    for row in rows:
        for key in ("q_mean", "q_low", "q_high", "inv_prior", "pareto_khat", "p_mean"):
            row.pop(key)
    root = _write_store(tmp_path / "run", rows, {"class": [0], "w": [0.0], "y": [1.0]}, None)
    path = write_report(root)
    page = _parse(path)
    assert _check_images(page) == []
    text = " ".join(page.text)
    assert "no spec.toml" in text and "no q_mean column" in text and "lack x0" in text
    # a folder with a spec and no finished unit yet
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "spec.toml").write_text(TINY_SPEC)
    assert "no finished unit yet" in " ".join(_parse(write_report(empty)).text)
    # an unreadable unit file is a note
    (root / "units" / "broken.parquet").write_bytes(b"not parquet")
    assert "broken.parquet could not be read" in " ".join(_parse(write_report(root)).text)


def test_bad_folders_raise_value_errors_naming_the_parameter(tmp_path):
    with pytest.raises(ValueError, match=r"^run_dir: .* does not exist"):
        write_report(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"^run_dir: .* is a file"):
        write_report(tmp_path / "file")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match=r"^run_dir: .* not a results folder"):
        write_report(tmp_path / "plain")
    (tmp_path / "plain" / "spec.toml").write_text(TINY_SPEC)
    with pytest.raises(ValueError, match=r"^out: .* is a folder"):
        write_report(tmp_path / "plain", out=tmp_path)


def test_cli_report(tmp_path):
    from typer.testing import CliRunner

    from guidelab.cli import app

    rows, _ = _mixture_rows()
    root = _write_store(tmp_path / "run", rows, None, TINY_SPEC)
    runner = CliRunner()
    result = runner.invoke(app, ["report", str(root), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r.html").is_file()
    result = runner.invoke(app, ["report", str(tmp_path / "nothing")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output


# ----------------------------------------------------------------------------- Chromium

WIDTH = 1280
"""The window width the page must fit without horizontal scrolling."""

_CHECKER = """
<script>
(function () {
  function check() {
    var details = document.querySelectorAll("details");
    for (var d = 0; d < details.length; d++) { details[d].open = true; }
    var out = [];
    var images = document.querySelectorAll("img");
    for (var i = 0; i < images.length; i++) {
      var im = images[i], box = im.getBoundingClientRect(), style = getComputedStyle(im);
      out.push({complete: im.complete, naturalWidth: im.naturalWidth,
                naturalHeight: im.naturalHeight, width: box.width, height: box.height,
                display: style.display, visibility: style.visibility});
    }
    var tables = [];
    var all = document.querySelectorAll("table");
    for (var t = 0; t < all.length; t++) {
      var table = all[t], box = table.getBoundingClientRect();
      tables.push({scrollWidth: table.scrollWidth, width: box.width, right: box.right,
                   container: table.parentElement.clientWidth,
                   head: table.querySelector("th") ? table.querySelector("th").textContent
                                                    : ""});
    }
    var resources = performance.getEntriesByType("resource").map(function (e) {
      return e.name; });
    var doc = document.scrollingElement;
    var pre = document.createElement("pre");
    pre.id = "guidelab-check";
    pre.textContent = JSON.stringify({images: out, resources: resources, tables: tables,
                                      scrollWidth: doc.scrollWidth,
                                      innerWidth: window.innerWidth});
    document.body.appendChild(pre);
  }
  if (document.readyState === "complete") { check(); }
  else { window.addEventListener("load", check); }
})();
</script>
"""


@pytest.fixture
def chromium() -> str:
    """The Chromium binary; skip without one, except in CI (CI=true), where it is a failure."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("no chromium binary in CI; .ci/run installs Debian's chromium")
    pytest.skip("no chromium binary (install Debian's chromium; in CI this test must run)")


def _chromium_args(binary: str, profile: Path) -> list[str]:
    # no network: a dead proxy and a resolver that finds no host, on top of the page
    # loading nothing by construction
    return [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-extensions", "--hide-scrollbars",
            "--proxy-server=http://127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--user-data-dir={profile}", "--virtual-time-budget=5000"]


def _render(binary: str, report: Path, tmp_path: Path) -> dict:
    """Render a copy of ``report`` with the checker at WIDTH px and return what it found."""
    import html as html_module

    html_text = report.read_text(encoding="utf-8")
    copy = tmp_path / f"checked-{report.parent.name}.html"
    copy.write_text(html_text.replace("</body>", _CHECKER + "</body>", 1), encoding="utf-8")
    dump = subprocess.run([*_chromium_args(binary, tmp_path / f"profile-{report.parent.name}"),
                           f"--window-size={WIDTH},2000", "--dump-dom", copy.as_uri()],
                          capture_output=True, text=True, timeout=180)
    assert dump.returncode == 0, dump.stderr[-2000:]
    found = re.search(r'<pre id="guidelab-check">(.*?)</pre>', dump.stdout, flags=re.S)
    assert found, "the checker did not run: " + dump.stderr[-2000:]
    return json.loads(html_module.unescape(found.group(1)))


def _check_rendered(result: dict, expected_images: int) -> None:
    """Every image decoded and laid out, nothing fetched, no horizontal scroll at WIDTH px,
    and no table wider than its container."""
    images = result["images"]
    assert len(images) == expected_images
    for image in images:
        assert image["complete"] and image["naturalWidth"] > 0 and image["naturalHeight"] > 0
        assert image["width"] > 0 and image["height"] > 0  # laid out, so shown
        assert image["display"] != "none" and image["visibility"] == "visible"
    assert all(not name.startswith(("http:", "https:", "ws:", "wss:", "ftp:"))
               for name in result["resources"]), result["resources"]
    assert result["innerWidth"] == WIDTH
    assert result["scrollWidth"] <= result["innerWidth"], result["scrollWidth"]
    assert result["tables"]
    for table in result["tables"]:
        assert table["scrollWidth"] <= table["container"], table
        assert table["right"] <= WIDTH, table


def test_report_renders_in_headless_chromium(chromium, real_report, tmp_path):
    binary = chromium
    expected = real_report.read_text(encoding="utf-8").count("<img ")
    assert expected == 2
    _check_rendered(_render(binary, real_report, tmp_path), expected)

    shot = tmp_path / "page.png"
    run = subprocess.run([*_chromium_args(binary, tmp_path / "profile2"),
                          f"--window-size={WIDTH},2400", f"--screenshot={shot}",
                          real_report.as_uri()], capture_output=True, text=True,
                         timeout=180, cwd=tmp_path)
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)  # [H, W, 3]
    assert pixels.shape[:2] == (2400, WIDTH)
    ink = (pixels.min(axis=2) < 200).mean()  # share of pixels darker than a light grey
    colours = len(np.unique(pixels.reshape(-1, 3)[::7], axis=0))
    assert ink > 0.02 and colours > 50, (ink, colours)


# ----------------------------------------------------------------------------- built-in studies

BUILT_IN = ["smoke", "li-jiao-1d", "li-jiao-digits", "support-leak"]
"""Built-in studies, one of each kind of report (run at their small sizes by conftest.py)."""

EXPECTED_IMAGES = {
    "smoke": 4,            # per sampler: Q(w), histograms
    "li-jiao-1d": 3,       # Q(w) with the exact grid, the profile, histograms
    "li-jiao-digits": 5,   # the judge's reliability; per rule: Q(w), the sample grid
    "support-leak": 5,     # outside against w; per perturbation (eps, kind): histograms
}


@pytest.fixture(scope="module")
def built_in(built_in_runs) -> dict[str, Path]:
    """Each built-in study of BUILT_IN, run at its small size by `guidelab reproduce`, which
    wrote its report (conftest.py: ``built_in_runs``, shared with the CLI tests)."""
    if not _runner_available():
        pytest.skip("the studies runner is not available")
    out = {}
    for name in BUILT_IN:
        status, _, stderr, _, folder, _ = built_in_runs[name]
        assert status == 0, stderr[-2000:]
        out[name] = folder
    return out


@pytest.mark.parametrize("name", list(BUILT_IN))
def test_built_in_study_report(built_in, name):
    folder = built_in[name]
    report = folder / "report.html"
    page = _parse(report)
    _check_self_contained(report, page)
    assert len(_check_images(page)) == EXPECTED_IMAGES[name]
    text = " ".join(page.text)
    raw = report.read_text(encoding="utf-8")
    # the glossary, and the run's date, host and duration as run.json records them
    assert 'id="glossary"' in raw and "Glossary" in text
    runs = json.loads((folder / "run.json").read_text())["runs"]
    assert len(runs) == 1 and runs[0]["units_computed"] > 0
    started = runs[0]["started"].replace("T", " ").replace("+00:00", "")
    assert "run started (UTC)" in text and started in text and runs[0]["host"] in text
    # rows pooled over classes, and no NaN anywhere in a cell
    assert "Pooled over classes" in text and "all classes (pooled)" in text
    cells = re.findall(r"<td[^>]*>(.*?)</td>", raw)
    assert not [c for c in cells if c.strip() in ("nan", "NaN", "None")]
    if name == "li-jiao-1d":
        assert "exact grid" in text and "grid Q \u00b1 err" in text
        assert "Where guidance acts" in text and "2 standard errors" in text
        assert "sigma ~ 1" in text and "formula Q" in text
        for term in ("grid_q_err", "entropy (nats)", "KL (nats)", "profile total"):
            assert term in text, term
    if name == "li-jiao-digits":
        assert "Judge calibration" in text and "ECE" in text
        assert "CFG = classifier-free guidance" in text
        assert "classifier guidance with the noisy classifier" in text
        assert "dominance" in text and "real_q" in text
    if name == "support-leak":
        assert "Clopper-Pearson" in text and "outside" in text
    if name == "smoke":
        assert "Setting 2" in text


def test_q_figure_of_a_store_holds_its_grid_values(built_in):
    """The Q(w) figure drawn from the store's rows (and the pooled rows, as the report draws
    it) carries every stored grid_q of the sampler's rows as the exact grid points."""
    from guidelab.report.plots import q_vs_w_figure
    from guidelab.studies.pooling import pooled_rows
    from guidelab.studies.store import ResultStore

    store = ResultStore(built_in["li-jiao-1d"], label="run_dir")
    rows = store.read_rows()
    fig = q_vs_w_figure(rows + pooled_rows(store.read_spec(), rows))
    for c in (0, 1):
        line = next(a for a in fig.findobj() if a.get_gid() == f"q-grid:class {c}")
        stored = sorted((r["w"], r["grid_q"]) for r in rows if r["class"] == c
                        and r["sampler"] != "exact_reverse" and r["grid_q"] is not None)
        assert len(stored) == len(store.read_spec().w)  # every swept w has its grid value
        assert [tuple(p) for p in line.get_xydata().tolist()] == stored
    pooled = next(a for a in fig.findobj() if a.get_gid() == "q-mc:all classes (pooled)")
    assert len(pooled.get_xdata()) == len(store.read_spec().w)


def test_a_rerun_appends_to_the_run_record(built_in, tmp_path):
    """run.json keeps one entry per finished run; a rerun that computes nothing says so."""
    import shutil as shutil_module

    from guidelab.studies.run import run_spec

    folder = tmp_path / "smoke"
    shutil_module.copytree(built_in["smoke"], folder)
    run_spec(folder / "spec.toml", folder, progress=False, log=lambda _: None)
    runs = json.loads((folder / "run.json").read_text())["runs"]
    assert [r["units_computed"] for r in runs] == [runs[0]["units_computed"], 0]
    for run in runs:
        assert run["seconds"] >= 0 and run["host"] and run["guidelab_version"]
        assert run["started"].endswith("+00:00")
    from guidelab.report.html import _load, _overview

    overview = _overview(_load(folder))  # the page's facts table, without its figures
    assert "earlier runs" in overview and runs[0]["host"] in overview


@pytest.mark.parametrize("name", list(BUILT_IN))
def test_built_in_report_fits_1280_px_in_chromium(chromium, built_in, name, tmp_path):
    report = built_in[name] / "report.html"
    _check_rendered(_render(chromium, report, tmp_path), EXPECTED_IMAGES[name])
