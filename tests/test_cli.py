"""The command line: a small full run, and clear errors for bad arguments."""

import csv

import pytest
from typer.testing import CliRunner

from guidelab.cli import app

runner = CliRunner()


def test_li_jiao_gmm_writes_table_csv_and_plot(tmp_path):
    result = runner.invoke(app, ["reproduce", "li-jiao-gmm", "--out", str(tmp_path),
                                 "--trials", "200", "--steps", "20", "--w", "0.5,5",
                                 "--sampler", "ddim", "--seed", "3", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "CFG scale = 1 + w" in result.output
    with open(tmp_path / "results.csv") as handle:
        table = list(csv.DictReader(handle))
    # 3 reference rows (exact kernel) + 3 classes x 3 strengths
    assert len(table) == 12
    assert {r["sampler"] for r in table} == {"exact_reverse", "ddim"}
    assert {float(r["w"]) for r in table} == {0.0, 0.5, 5.0}
    for column in ["class", "w", "n", "q_mean", "q_low", "q_high", "q_top_share", "p_mean",
                   "accuracy", "frac_p_decreased", "inv_prior"]:
        assert column in table[0]
    png = (tmp_path / "q_vs_w.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args,message", [
    (["--trials", "-3"], "trials: expected a positive integer"),
    (["--sampler", "magic"], "sampler: unknown sampler 'magic'"),
    (["--classes", "0,7"], "classes: unknown class 7"),
    (["--w", "0,-1"], "--allow-negative"),
    (["--steps", "0"], "steps: expected a positive integer"),
    (["--device", "cuda:9"] , "device"),
])
def test_bad_arguments_stop_with_a_clear_message(tmp_path, args, message):
    result = runner.invoke(app, ["reproduce", "li-jiao-gmm", "--out", str(tmp_path), *args])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "results.csv").exists()


def test_unparseable_strengths_are_named(tmp_path):
    result = runner.invoke(app, ["reproduce", "li-jiao-gmm", "--w", "0,strong"])
    assert result.exit_code == 2
    assert "--w" in result.output
