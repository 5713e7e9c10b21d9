"""`guidelab reproduce li-jiao-1d`: Monte Carlo beside the exact grid, and the profile figure."""

import csv

import pytest
import torch
from typer.testing import CliRunner

from guidelab.cli import app


def test_li_jiao_1d_writes_grid_columns_and_profile(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = CliRunner().invoke(app, ["reproduce", "li-jiao-1d", "--out", str(tmp_path),
                                          "--trials", "300", "--steps", "60", "--w", "2",
                                          "--set", "metric_options.exact_grid.points=1025",
                                          "--set", "metric_options.profile.steps=200",
                                          "--quiet"])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    reference = [r for r in rows if r["sampler"] == "exact_reverse" and r["class"] != "all"]
    assert len(reference) == 2
    for row in reference:  # the identity Q = 1/p(c) = 2, reached on the grid
        assert abs(float(row["grid_q"]) - 2.0) < 2e-3
    guided = {(r["class"], float(r["w"])): float(r["grid_q"]) for r in rows
              if r["sampler"] == "ddpm_type" and r["class"] != "all"}
    for c in ("0", "1"):
        assert guided[(c, 2.0)] < guided[(c, 0.0)]
    # the profile is a metric of the study, stored with the rows of the swept w closest to 1
    profiled = [r for r in rows if r["profile"]]
    assert {(r["class"], float(r["w"])) for r in profiled} == {("0", 2.0), ("1", 2.0)}
    for row in profiled:  # the formula's Q = start - (the decrease), by definition
        assert float(row["profile_formula_q"]) == pytest.approx(
            float(row["profile_start"]) - float(row["profile_total"]), rel=1e-9)
    for name in ("profile.png", "q_vs_w.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "profile" in result.output
