"""The command line: small full runs, spec commands, and one-line errors for bad input."""

import csv
import os

import pytest
from typer.testing import CliRunner

from guidelab.cli import app
from guidelab.studies import ResultStore, load_spec

runner = CliRunner()

TINY = """
name = "tiny"
trials = 32
[distribution]
family = "gaussian_mixture"
means = [[-1.0], [1.0]]
covariances = [0.5, 0.5]
weights = [0.5, 0.5]
labels = [0, 1]
[sampler]
name = "ddim"
schedule = "linear"
steps = 6
[sweep]
w = [0, 2]
"""


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


# the CLI's plumbing at a small size: the exact grid columns and the profile (minutes at the
# spec's resolution) are tested in test_cli_exact.py and test_exact_metric.py
SMALL = ("--set", "metrics=['class_probability']")


def test_li_jiao_gmm_writes_table_csv_and_plot(tmp_path):
    result = invoke("reproduce", "li-jiao-gmm", "--out", tmp_path, "--trials", "200",
                    "--steps", "20", "--w", "0.5,5", "--sampler", "ddim", "--seed", "3",
                    "--quiet", *SMALL)
    assert result.exit_code == 0, result.output
    assert "CFG scale = 1 + w" in result.output
    with open(tmp_path / "results.csv") as handle:
        table = list(csv.DictReader(handle))
    # 3 reference rows (exact kernel) + 3 classes x 3 strengths, and the rows pooled over
    # classes: the reference's and one per strength
    assert len(table) == 16
    assert sum(r["class"] == "all" for r in table) == 4
    assert {r["sampler"] for r in table} == {"exact_reverse", "ddim"}
    assert {float(r["w"]) for r in table} == {0.0, 0.5, 5.0}
    for column in ["class", "w", "n", "q_mean", "q_low", "q_high", "q_top_share", "p_mean",
                   "accuracy", "frac_p_decreased", "inv_prior", "seed", "schedule", "dtype",
                   "device", "guidelab_version", "unit_id"]:
        assert column in table[0]
    png = (tmp_path / "q_vs_w.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # the output says where the Parquet results (and the report) are
    assert f"results (Parquet, one file per unit): {tmp_path / 'units'}" in result.output
    assert len(ResultStore(tmp_path).finished()) == 6
    spec = load_spec(tmp_path / "spec.toml")
    assert (spec.trials, spec.sampler.name, spec.seed, spec.w) == (200, "ddim", 3,
                                                                   [0.0, 0.5, 5.0])
    # the same command again computes nothing and prints the same table
    again = invoke("reproduce", "li-jiao-gmm", "--out", tmp_path, "--trials", "200",
                   "--steps", "20", "--w", "0.5,5", "--sampler", "ddim", "--seed", "3",
                   "--quiet", *SMALL)
    assert again.exit_code == 0 and "0 computed now, 6 already there" in again.output


@pytest.mark.parametrize("args,message", [
    (["--trials", "-3"], "error: --trials: trials: expected a positive integer, got -3"),
    (["--sampler", "magic"], "error: --sampler: sampler.name: unknown sampler 'magic'"),
    (["--classes", "0,7"], "error: --classes: sweep.class[1]: unknown class 7"),
    (["--w", "0,-1"], "error: --w: sweep.w: w = -1 < 0 guides away from the class; pass "
                      "--allow-negative to run it"),
    (["--steps", "0"], "error: --steps: sampler.steps: expected a positive integer"),
    (["--steps", "5"], "error: --steps: sampler.steps: li_jiao schedule with steps = 5"),
    (["--device", "cuda:9"], "error: --device: device: 'cuda:9'"),
    (["--w", "0,strong"], "error: --w: expected comma-separated numbers"),
])
def test_bad_arguments_stop_with_one_line(tmp_path, args, message):
    result = invoke("reproduce", "li-jiao-gmm", "--out", tmp_path / "out", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("error:")]) == 1
    assert not (tmp_path / "out").exists()


def test_debug_shows_the_traceback(tmp_path):
    for args in (["--debug", "reproduce", "li-jiao-gmm", "--steps", "5"],
                 ["reproduce", "li-jiao-gmm", "--steps", "5", "--debug"]):
        result = invoke(*args, "--out", tmp_path)
        assert result.exit_code != 0 and result.exception is not None
        assert "li_jiao schedule with steps = 5" in str(result.exception)


def test_out_naming_a_file_or_an_unwritable_place_is_one_line(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    result = invoke("run", "smoke", "--out", a_file, "--quiet")
    assert result.exit_code == 2
    assert result.output.strip() == f"error: --out: {a_file} is a file; expected a folder " \
                                     f"for the results"
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        result = invoke("run", "smoke", "--out", locked / "run", "--quiet")
        assert result.exit_code == 2 and "is not writable" in result.output


def test_spec_list_and_show_give_a_copyable_spec(tmp_path):
    listed = invoke("spec", "list")
    assert listed.exit_code == 0
    assert "li-jiao-gmm" in listed.output and "smoke" in listed.output
    shown = invoke("spec", "show", "li-jiao-gmm")
    assert shown.exit_code == 0
    copy = tmp_path / "mine.toml"
    copy.write_text(shown.output)
    assert load_spec(copy) == load_spec("li-jiao-gmm")
    resolved = invoke("spec", "show", "smoke", "--resolved", "--set", "trials=7")
    assert resolved.exit_code == 0 and "trials = 7" in resolved.output
    unknown = invoke("spec", "show", "nope")
    assert unknown.exit_code == 2 and unknown.output.startswith("error: spec: unknown built-in")


def test_run_a_spec_file_with_set_and_resume(tmp_path):
    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY)
    out = tmp_path / "out"
    result = invoke("run", spec, "--out", out, "--set", "trials=24", "--set",
                    "sweep.w=[0, 1, 3]", "--quiet", "--no-report")
    assert result.exit_code == 0, result.output
    assert "2 units (2 computed now, 0 already there)" in result.output
    rows = ResultStore(out).read_rows()
    assert len(rows) == 6 and {r["n"] for r in rows} == {24}
    again = invoke("run", spec, "--out", out, "--set", "trials=24", "--set",
                   "sweep.w=[0, 1, 3]", "--quiet", "--no-report")
    assert "(0 computed now, 2 already there)" in again.output
    other = invoke("run", spec, "--out", out, "--quiet")
    assert other.exit_code == 2
    assert "holds results of another spec" in other.output and "trials" in other.output


@pytest.mark.parametrize("args,message", [
    (["--set", "trails=3"], "error: --set trails: trails: unknown key (did you mean 'trials'?"),
    (["--set", "sweep.w=[0, 1"], "error: --set sweep.w=[0, 1: not a TOML value"),
    (["--set", "trials=-1"], "error: --set trials: trials: expected a positive integer"),
    (["--backend", "spark"], "error: backend: expected local or ray"),
    (["--address", "x:1"], "error: address: --address needs --backend ray"),
])
def test_bad_run_options_are_one_line(tmp_path, args, message):
    result = invoke("run", "smoke", "--out", tmp_path / "out", "--quiet", *args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith(message), result.output
    assert "Traceback" not in result.output


def test_malformed_spec_file_is_one_line(tmp_path):
    spec = tmp_path / "bad.toml"
    spec.write_text(TINY.replace("steps = 6", "steps = -6"))
    result = invoke("run", spec, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert result.output == f"error: {spec}: sampler.steps: expected a positive integer, got -6\n"
    missing = invoke("run", tmp_path / "nothing.toml")
    assert missing.exit_code == 2 and "no such file" in missing.output


def test_an_interruption_says_how_to_resume(tmp_path, monkeypatch):
    import guidelab.studies.backends as backends_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(backends_module, "run_unit", interrupted)
    out = tmp_path / "out"
    result = invoke("run", "smoke", "--out", out, "--quiet", "--no-report")
    assert result.exit_code == 130
    assert f"interrupted; finished units are saved in {out}, run the same command to resume" \
        in result.output


def test_reproduce_runs_any_built_in_spec_and_names_unknown_ones(tmp_path):
    result = invoke("reproduce", "smoke", "--out", tmp_path / "s", "--set", "trials=30",
                    "--w", "2", "--quiet")
    assert result.exit_code == 0, result.output
    assert "pooled over classes" in result.output
    spec = load_spec(tmp_path / "s" / "spec.toml")
    assert spec.trials == 30 and spec.w == [0.0, 2.0]
    unknown = invoke("reproduce", "nope", "--out", tmp_path / "n")
    assert unknown.exit_code == 2
    assert unknown.output.startswith("error: spec: unknown built-in spec 'nope'")
    assert not (tmp_path / "n").exists()
