"""The HTML report of a results folder: structure, escaping, tolerance, and rendering.

The page must be self-contained: every image is a PNG data URI that decodes (checked here by
the PNG signature and IHDR header, and by PIL), nothing is loaded from anywhere (no script,
link, font or remote URL), and every string from the data is escaped. Headless Chromium (Debian's
``chromium``; ``.ci/run`` installs it) renders a copy of the page with an appended checker
script that records, for every image, whether it decoded (``complete && naturalWidth > 0``) and
its box on the page; the test reads that back from the dumped DOM. The test skips only when no
Chromium binary is found outside CI (``CI=true`` makes a missing browser a failure).
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


def test_unit_files_numbers_in_summary(real_run, real_report):
    """The pooled Q of the summary table is sum_c pi_c Q_c with pi_c = p(c) / sum p(c)."""
    rows = [r for p in (real_run / "units").glob("*.parquet")
            for r in pq.read_table(p).to_pylist() if r["sampler"] != "exact_reverse"]
    text = real_report.read_text()
    for w in (0.0, 1.0, 4.0):
        at_w = [r for r in rows if r["w"] == w]
        prior = np.array([1 / r["inv_prior"] for r in at_w])
        pooled = float(np.sum(prior / prior.sum() * np.array([r["q_mean"] for r in at_w])))
        assert f">{pooled:.4g}<" in text


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
    assert "grid_q" in text  # the extra column is shown
    assert "\u2191 unbounded" in text
    assert raw.count('class="unreliable"') >= 2  # the heavy rows of both classes
    assert "exact_reverse (reference)" in text


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

_CHECKER = """
<script>
(function () {
  function check() {
    var out = [];
    var images = document.querySelectorAll("img");
    for (var i = 0; i < images.length; i++) {
      var im = images[i], box = im.getBoundingClientRect(), style = getComputedStyle(im);
      out.push({complete: im.complete, naturalWidth: im.naturalWidth,
                naturalHeight: im.naturalHeight, width: box.width, height: box.height,
                display: style.display, visibility: style.visibility});
    }
    var resources = performance.getEntriesByType("resource").map(function (e) {
      return e.name; });
    var pre = document.createElement("pre");
    pre.id = "guidelab-check";
    pre.textContent = JSON.stringify({images: out, resources: resources});
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


def test_report_renders_in_headless_chromium(chromium, real_report, tmp_path):
    binary = chromium
    html_text = real_report.read_text(encoding="utf-8")
    expected = html_text.count("<img ")
    assert expected == 2
    copy = tmp_path / "checked.html"
    copy.write_text(html_text.replace("</body>", _CHECKER + "</body>", 1), encoding="utf-8")
    dump = subprocess.run([*_chromium_args(binary, tmp_path / "profile"), "--dump-dom",
                           copy.as_uri()], capture_output=True, text=True, timeout=180)
    assert dump.returncode == 0, dump.stderr[-2000:]
    page = _Page()
    page.feed(dump.stdout)
    found = re.search(r'<pre id="guidelab-check">(.*?)</pre>', dump.stdout, flags=re.S)
    assert found, "the checker did not run: " + dump.stderr[-2000:]
    import html as html_module

    report = json.loads(html_module.unescape(found.group(1)))
    images = report["images"]
    assert len(images) == expected
    for image in images:
        assert image["complete"] and image["naturalWidth"] > 0 and image["naturalHeight"] > 0
        assert image["width"] > 0 and image["height"] > 0  # laid out, so shown
        assert image["display"] != "none" and image["visibility"] == "visible"
    assert all(not name.startswith(("http:", "https:", "ws:", "wss:", "ftp:"))
               for name in report["resources"]), report["resources"]

    shot = tmp_path / "page.png"
    run = subprocess.run([*_chromium_args(binary, tmp_path / "profile2"),
                          "--window-size=1280,2400", f"--screenshot={shot}",
                          real_report.as_uri()], capture_output=True, text=True,
                         timeout=180, cwd=tmp_path)
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)  # [H, W, 3]
    assert pixels.shape[:2] == (2400, 1280)
    ink = (pixels.min(axis=2) < 200).mean()  # share of pixels darker than a light grey
    colours = len(np.unique(pixels.reshape(-1, 3)[::7], axis=0))
    assert ink > 0.02 and colours > 50, (ink, colours)
