"""What a new user sees: progress that never goes quiet for long, exact values in the table,
help texts that keep their defaults, every problem of a spec at once, errors that name the
option typed, and strict JSON in every file a run writes."""

import csv
import inspect
import json
import math
import re
import struct
from pathlib import Path

import click
import pytest
import typer
from conftest import SMALL
from typer.testing import CliRunner

from guidelab.cli import app
from guidelab.schedules import li_jiao_schedule
from guidelab.studies import ResultStore
from guidelab.studies.spec import SpecError, builtin_specs, load_spec

# one worker when the suite is split over processes (pytest -n): the built-in studies
# run once for these tests and the report's
pytestmark = pytest.mark.xdist_group("built_in")

runner = CliRunner()

SILENCE_LIMIT = 10.0
"""Most seconds a study's command may go without writing to stdout or stderr (a liveness
check on a shared 2-core machine, not a benchmark)."""


@pytest.fixture(scope="module")
def runs(built_in_runs):
    """Every built-in study at its small size (conftest.py: ``built_in_runs``)."""
    return built_in_runs


def test_every_built_in_study_has_a_small_size():
    assert set(SMALL) == set(builtin_specs())


@pytest.mark.parametrize("name", sorted(SMALL))
def test_no_study_goes_silent_for_long(runs, name):
    status, stdout, stderr, longest, out, _ = runs[name]
    assert status == 0, stderr[-3000:]
    assert longest < SILENCE_LIMIT, f"{name}: {longest:.1f} s without output"
    assert "writing the HTML report" in stderr
    # where the time went, last
    lines = stdout.splitlines()
    assert lines[-2].startswith("time: ") and "in all" in lines[-2] and "report" in lines[-2]
    assert lines[-1].startswith("  summed over the ") and "sampling" in lines[-1]
    for metric in load_spec(out / "spec.toml").metrics:
        assert f" {metric} " in lines[-1] + " "


def test_long_metrics_say_what_they_are_doing(runs):
    stderr = runs["li-jiao-gmm"][2]
    assert "exact grid: class 0, w = 1 (ddpm_type; 17 x 17 nodes)" in stderr
    assert "profile: class 2, w = 1 (10 steps of the guided reverse SDE, 16 paths)" in stderr
    stderr = runs["li-jiao-1d"][2]
    assert "exact grid: class 1, w = 2 (ddpm_type; 65 nodes, then 129)" in stderr
    assert "training" in runs["li-jiao-digits"][2] or "building" in runs["li-jiao-digits"][2]


def test_the_table_shows_the_exact_grid_q_beside_monte_carlo(runs):
    status, stdout, _, _, out, _ = runs["li-jiao-1d"]
    assert status == 0
    header = next(line for line in stdout.splitlines() if line.startswith("sampler "))
    assert " grid Q " in header and header.index("grid Q") > header.index("interval")
    printed = {}
    pattern = re.compile(r"^(\S+)\s+(\d+|all)\s+(\S+)\s+\d+\s+\S+ \[[^]]*\]\s(.{16}) ")
    for line in stdout.splitlines():
        match = pattern.match(line)
        if match:
            printed[(match[1], match[2], float(match[3]))] = match[4].strip()
    with open(out / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(printed) == len(rows) == 9  # 2 reference, 2 classes x 2 w, 3 pooled rows
    for row in rows:
        shown = printed[(row["sampler"], row["class"], float(row["w"]))]
        if row["class"] == "all":
            assert shown == ""  # pooled rows have no grid Q
            continue
        value, error = shown.split(" +-")
        assert float(value) == pytest.approx(float(row["grid_q"]), abs=5e-5)
        assert float(error) == pytest.approx(float(row["grid_q_err"]), rel=0.5)
    # a study without the exact grid has no such column
    assert "grid Q" not in runs["smoke"][1]


def _strict(text: str):
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def _safetensors_header(path: Path) -> dict:
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    return _strict(data[8:8 + size].decode())


def test_every_json_a_run_writes_is_strict(runs):
    checked = 0
    for name, (status, _, _, _, out, _) in runs.items():
        assert status == 0, name
        for path in out.rglob("*.json"):
            _strict(path.read_text())
            checked += 1
        for row in ResultStore(out).read_rows():
            for key, value in row.items():
                if key.startswith("record_") or key in ("profile", "calibration"):
                    if value is not None:
                        _strict(value)
                        checked += 1
    # the model store: trained denoisers, classifiers and judges (digits, learned-vs-exact),
    # each a safetensors file whose header and guidelab metadata are JSON
    cache = runs["li-jiao-digits"][5]  # the model store every study shares
    files = [path for path in (cache / "models").rglob("*") if path.is_file()]
    weights = [path for path in files if path.suffix == ".safetensors"]
    assert len(weights) >= 4
    for path in weights:
        header = _safetensors_header(path)
        _strict(header["__metadata__"]["guidelab"])
    for path in files:
        if path.suffix == ".json":
            _strict(path.read_text())
    assert checked > 50


# ----------------------------------------------------------------------------- messages

THREE_PROBLEMS = """
name = "three"
trials = 40
seed = -1
colour = "blue"
[distribution]
family = "gaussian_mixture"
means = [[-1.0], [1.0]]
covariances = [0.5, 0.5]
weights = [0.5, 0.5]
labels = [0, 1]
[sampler]
name = "ddim"
schedule = "linear"
steps = -6
[sweep]
w = [0, 2]
"""


def test_a_spec_with_three_problems_lists_all_three(tmp_path):
    path = tmp_path / "three.toml"
    path.write_text(THREE_PROBLEMS)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    lines = str(info.value).splitlines()
    assert len(lines) == 3 and info.value.more == 2
    assert lines[0].startswith(f"{path}: colour: unknown key (expected one of: ")  # first
    assert lines[1:] == [f"{path}: sampler.steps: expected a positive integer, got -6",
                         f"{path}: seed: expected a number >= 0, got -1"]
    # the command line prints each on its own line; an override's problem names the override
    result = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "out"), "--set",
                                 "chunk_rows=0"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    errors = result.output.splitlines()
    assert all(line.startswith("error: ") for line in errors) and len(errors) == 4
    assert [line.removeprefix("error: ") for line in errors if "--set" not in line] == lines
    assert any(line.startswith("error: --set chunk_rows: chunk_rows: ") for line in errors)
    assert not (tmp_path / "out").exists()
    # --debug shows the traceback of the error holding every problem
    debug = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "out"), "--debug"])
    assert isinstance(debug.exception, SpecError)
    assert str(debug.exception).splitlines() == lines


def _smallest_li_jiao_steps() -> int:
    """The smallest T >= 2 with c1 log T / T < 1 (and so for every larger T), for the
    schedule's default c1."""
    c1 = inspect.signature(li_jiao_schedule).parameters["c1"].default
    return next(t for t in range(3, 10**6) if c1 * math.log(t) / t < 1)


@pytest.mark.parametrize("args,expected,absent", [
    (["--w", "-1"], "error: --w: sweep.w: w = -1 < 0 guides away from the class; pass "
                    "--allow-negative to run it", "guidance.allow_negative"),
    (["--w", "0,-1"], "pass --allow-negative", "guidance.allow_negative"),
    (["--steps", "5"], "error: --steps: sampler.steps: li_jiao schedule with steps = 5: too few "
                       f"steps; the smallest valid value for the li_jiao schedule is "
                       f"{_smallest_li_jiao_steps()}", "c1"),
    (["--steps", "1"], f"is {_smallest_li_jiao_steps()}", "c1"),
])
def test_errors_name_the_option_typed(tmp_path, args, expected, absent):
    result = runner.invoke(app, ["reproduce", "li-jiao-gmm", "--out", str(tmp_path / "o"),
                                 *args])
    assert result.exit_code == 2
    assert expected in result.output
    assert absent not in result.output
    assert len(result.output.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_the_smallest_valid_steps_is_valid_and_the_one_below_is_not():
    smallest = _smallest_li_jiao_steps()
    load_spec("li-jiao-gmm", [f"sampler.steps={smallest}"])
    with pytest.raises(SpecError, match=f"the smallest valid steps is {smallest}"):
        load_spec("li-jiao-gmm", [f"sampler.steps={smallest - 1}"])


@pytest.mark.parametrize("command", ["run", "reproduce"])
def test_folder_errors_name_the_out_option(tmp_path, command):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    result = runner.invoke(app, [command, "smoke", "--out", str(a_file), "--quiet"])
    assert result.exit_code == 2
    assert result.output == f"error: --out: {a_file} is a file; expected a folder for the " \
                            f"results\n"


# ----------------------------------------------------------------------------- help

def _commands() -> list[tuple[list[str], click.Command]]:
    group = typer.main.get_command(app)
    found = [([], group)]
    for name, command in group.commands.items():
        found.append(([name], command))
        for sub, inner in getattr(command, "commands", {}).items():
            found.append(([name, sub], inner))
    return found


@pytest.mark.parametrize("path,command", _commands(), ids=lambda x: " ".join(x)
                         if isinstance(x, list) else None)
def test_help_keeps_every_text_and_flags_show_no_value(path, command):
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "400",
                                                        "TERMINAL_WIDTH": "400"})
    assert result.exit_code == 0
    lines = [" ".join(line.replace("│", " ").split()) for line in result.output.splitlines()]
    shown = "\n".join(lines)
    ctx = click.Context(command)
    for param in command.get_params(ctx):
        text = " ".join((getattr(param, "help", None) or "").split())
        if not text:
            continue
        assert text in shown, f"{param.name}: {text!r} is not shown whole"
        assert "[default:" not in shown  # one form of defaults: "(default: x)" in the text
        if getattr(param, "is_flag", False):
            for option in param.opts:
                row = next(line for line in lines if line.startswith(option + " "))
                assert not re.match(re.escape(option) + r" <", row), row


# ----------------------------------------------------------------------------- rounding

def test_a_kl_below_zero_by_rounding_is_shown_as_zero():
    from guidelab.cli import _format_row, _shown

    nan = float("nan")
    assert _shown("kl", -1.5e-14, {"kl_err": nan}) == 0.0  # no stated error: below 1e-12
    assert _shown("kl", -1.5e-14, {}) == 0.0
    assert _shown("kl", -2e-4, {"kl_err": 3e-4}) == 0.0  # within its stated error
    assert _shown("kl", -2e-4, {"kl_err": 1e-5}) == -2e-4  # a real problem stays visible
    assert _shown("kl", -2e-4, {}) == -2e-4
    assert _shown("entropy", -1.5e-14, {}) == -1.5e-14  # an entropy may be negative
    row = {"class": 0, "w": 1.0, "sampler": "ddim", "steps": 10, "grid_q": 1.5, "kl": -3e-15,
           "kl_err": nan}
    line = _format_row(row)
    assert "kl=0 " in line + " " and "e-15" not in line
    assert row["kl"] == -3e-15  # the row itself is left as computed
