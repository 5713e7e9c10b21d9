"""Bounded validation: a spec over a documented limit is one line naming the file, the key and
the limit, within 2 s and 3 GB, before anything sized by the user's number is built.

Each pathological spec is run through the real command in a child process whose address space
is capped (RLIMIT_AS), so a regression that builds a schedule of 10^9 steps or copies a huge
sweep fails here instead of eating the machine. The child imports guidelab first and says
"ready"; only then does the 2 s budget start (a subprocess timeout, not a measured duration),
so the budget is the validation's, not the interpreter's start-up.
"""

import json
import resource
import subprocess
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from guidelab.cli import app
from guidelab.studies.spec import SpecError, builtin_spec_text, limits, load_spec

BUDGET_S = 2
MEMORY = 3 << 30

SMOKE = builtin_spec_text("smoke")

CHILD = textwrap.dedent("""
    import json, sys
    import guidelab.cli, guidelab.studies, guidelab.studies.run, guidelab.studies.spec
    from guidelab.cli import app
    from guidelab.studies.plugins import load_plugins
    load_plugins()  # the one-time scan of installed packages' entry points, like the imports
    print("ready", flush=True)
    request = json.loads(sys.stdin.readline())
    if "argv" in request:
        app(request["argv"], prog_name="guidelab")
    else:
        exec(request["code"])
""")


def _cap_memory():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def in_child(request: dict) -> subprocess.CompletedProcess:
    """Run ``request`` (``argv`` of the command, or ``code``) in a warm child capped at 3 GB;
    the child must finish within BUDGET_S of receiving it."""
    process = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=_cap_memory)
    try:
        assert process.stdout.readline() == "ready\n", process.stderr.read()
        out, err = process.communicate(json.dumps(request) + "\n", timeout=BUDGET_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def refused(tmp_path, text: str | bytes, *extra: str) -> str:
    """`guidelab run FILE` on a spec file: exit 2 and one line on stderr, which is returned;
    nothing is written to the output folder."""
    path = tmp_path / "study.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    out = tmp_path / "out"
    result = in_child({"argv": ["run", str(path), "--out", str(out), "--quiet", *extra]})
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith(f"error: {path}: ")
    assert not out.exists()
    return lines[0]


def test_a_billion_steps_is_refused_before_a_schedule_is_built(tmp_path):
    line = refused(tmp_path, SMOKE.replace("steps = 20", "steps = 1000000000"))
    assert "sampler.steps: 1000000000 is over the limit of 100,000" in line
    assert "MAX_STEPS" in line


def test_two_to_the_seventy_trials_is_refused(tmp_path):
    line = refused(tmp_path, SMOKE.replace("trials = 200", f"trials = {2**70}"))
    assert ": trials: a 71-bit number is over the limit of 1,000,000,000" in line


def test_a_50_mb_description_is_refused_by_the_size_of_the_file(tmp_path):
    text = SMOKE.replace('description = "', 'description = "' + "x" * 50_000_000)
    line = refused(tmp_path, text)
    assert "over the limit of 1,000,000 bytes" in line and "MAX_SPEC_BYTES" in line
    assert "xxxx" not in line


def test_a_long_description_is_refused_by_its_own_limit(tmp_path):
    line = refused(tmp_path, SMOKE.replace('description = "', 'description = "' + "x" * 20_000))
    assert ": description: 20,082 characters is over the limit of 10,000 characters" in line


def test_arrays_nested_500_deep_are_one_line(tmp_path):
    line = refused(tmp_path, SMOKE + "\n[extra]\nvalue = " + "[" * 500 + "]" * 500 + "\n")
    assert "nested too deeply" in line


def test_arrays_nested_40_deep_name_the_key_and_the_limit(tmp_path):
    text = SMOKE.replace("[guidance]", "deep = " + "[" * 40 + "1" + "]" * 40 + "\n[guidance]")
    line = refused(tmp_path, text)
    assert ": distribution.deep[0][0]" in line
    assert "deeper than the limit of 32 levels" in line


def test_a_sweep_of_200000_values_is_refused_before_any_value_is_checked(tmp_path):
    zeros = ", ".join(["0"] * 200_000)  # 600 kB, within the size of a file
    line = refused(tmp_path, SMOKE.replace('"sampler.name" = ["ddpm_type", "ddim"]',
                                           f"seed = [{zeros}]"))
    assert ": sweep.seed: 200,000 values is over the limit of 10,000" in line


def test_a_sweep_of_200000_distinct_values_is_refused_by_the_api_too():
    result = in_child({"code": textwrap.dedent("""
        import tomllib
        from guidelab.studies.spec import SpecError, builtin_spec_text, validate_spec
        data = tomllib.loads(builtin_spec_text("smoke"))
        data["sweep"]["seed"] = list(range(200_000))
        try:
            validate_spec(data, "api")
        except SpecError as error:
            print(error)
    """)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == (
        "api: sweep.seed: 200,000 values is over the limit of 10,000 values of one swept key "
        "(MAX_SWEEP_VALUES in guidelab.studies.spec.limits)")


def test_a_sweep_within_the_limits_validates_each_value_without_revalidating_the_spec():
    # 10,000 seeds over a 1-D mixture: a whole-spec validation per value (and copies of the
    # sweep for each) took minutes; a check of each value with the field's own validator, the
    # rest shared, takes well under the budget
    result = in_child({"code": textwrap.dedent("""
        import tomllib
        from guidelab.studies.spec import builtin_spec_text, validate_spec
        from guidelab.studies.units import expand_units
        data = tomllib.loads(builtin_spec_text("smoke"))
        data["sweep"]["seed"] = list(range(10_000))
        spec = validate_spec(data, "api")
        print(len(spec.sweep["seed"]), spec.sweep["seed"][-1])
    """)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["10000", "9999"]


def test_non_utf8_bytes_and_huge_integers_are_one_line_naming_the_file(tmp_path):
    line = refused(tmp_path, SMOKE.encode() + b"\n# \xff\xfe\n")
    assert "not UTF-8 text" in line
    line = refused(tmp_path, SMOKE.replace("trials = 200", "trials = 1" + "0" * 5000))
    assert "not valid TOML" in line


# ----------------------------------------------------------------------------- in process

def write(tmp_path, text, name="study.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(source, overrides=()):
    with pytest.raises(SpecError) as info:
        load_spec(source, overrides)
    return str(info.value)


@pytest.mark.parametrize("key,value,limit", [
    ("sampler.steps", limits.MAX_STEPS + 1, "MAX_STEPS"),
    ("reference.steps", limits.MAX_STEPS + 1, "MAX_STEPS"),
    ("trials", limits.MAX_TRIALS + 1, "MAX_TRIALS"),
    ("metric_options.class_probability.quantile_bins", limits.MAX_QUANTILE_BINS + 1,
     "MAX_QUANTILE_BINS"),
])
def test_each_number_limit_names_the_key_and_the_limit(tmp_path, key, value, limit):
    path = write(tmp_path, SMOKE)
    assert error_of(path, [f"{key}={value}"]).startswith(
        f"--set {key}: {key}: {value} is over the limit of ")
    assert limit in error_of(path, [f"{key}={value}"])


def test_values_at_the_limits_are_accepted(tmp_path):
    spec = load_spec(write(tmp_path, SMOKE), [f"trials={limits.MAX_TRIALS}",
                                              f"sampler.steps={limits.MAX_STEPS}",
                                              "sampler.schedule=linear"])
    assert spec.trials == limits.MAX_TRIALS and spec.sampler.steps == limits.MAX_STEPS


def test_a_limit_applies_to_swept_values_too(tmp_path):
    path = write(tmp_path, SMOKE.replace('"sampler.name" = ["ddpm_type", "ddim"]',
                                         '"sampler.steps" = [10, 1000000000]'))
    message = error_of(path)
    assert message.startswith(f'{path}: sweep."sampler.steps"[1]: 1000000000 is over the limit')
    path = write(tmp_path, SMOKE.replace('"sampler.name" = ["ddpm_type", "ddim"]',
                                         'sampler = [{ steps = 1000000000 }]'), "b.toml")
    assert error_of(path).startswith(f"{path}: sweep.sampler[0]: 1000000000 is over the limit")


def test_the_number_of_units_is_bounded(tmp_path):
    seeds = ", ".join(map(str, range(400)))
    path = write(tmp_path, SMOKE.replace('"sampler.name" = ["ddpm_type", "ddim"]',
                                         f'"sampler.name" = ["ddpm_type", "ddim"]\n'
                                         f"seed = [{seeds}]\ndtype = [\"float32\", \"float64\"]"
                                         f"\n\"sampler.steps\" = "
                                         f"[{', '.join(map(str, range(10, 110)))}]"))
    message = error_of(path)
    assert message.startswith(f"{path}: sweep: ")
    assert "over the limit of 100,000 units of a study (MAX_UNITS" in message


def test_limits_are_documented_constants():
    import ast

    names = ["MAX_SPEC_BYTES", "MAX_DEPTH", "MAX_DESCRIPTION_CHARS", "MAX_TRIALS", "MAX_STEPS",
             "MAX_SWEEP_VALUES", "MAX_UNITS", "MAX_SAMPLES"]
    for name in names:
        assert name in limits.__all__ and isinstance(getattr(limits, name), int)
    assert limits.MAX_TRIALS < 2**63 and limits.MAX_SAMPLES <= 2**53
    with open(limits.__file__) as handle:
        body = ast.parse(handle.read()).body
    documented = {statement.targets[0].id for statement, after in zip(body, body[1:], strict=False)
                  if isinstance(statement, ast.Assign) and isinstance(after, ast.Expr)
                  and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)
                  and len(after.value.value) > 40}
    assert set(names) <= documented


# ----------------------------------------------------------------------------- --set

def test_an_unknown_key_from_set_names_the_option_not_the_file(tmp_path):
    result = CliRunner().invoke(app, ["run", "smoke", "--out", str(tmp_path / "out"),
                                      "--set", "foo.bar=1"])
    assert result.exit_code == 2
    assert result.output.startswith("error: --set foo.bar: foo: unknown key")
    assert result.output.count("\n") == 1
    assert not (tmp_path / "out").exists()
    # below an existing table, and in a table the option made up
    assert error_of("smoke", ["sampler.foo.bar=1"]).startswith(
        "--set sampler.foo.bar: sampler.foo: unknown key")
    assert error_of("smoke", ["trials=5", "guidance.nope=1"]).startswith(
        "--set guidance.nope: guidance.nope: unknown key")
    # a problem of the file is still the file's
    path = write(tmp_path, SMOKE.replace("seed = 0", "sede = 0"))
    assert error_of(path, ["foo.bar=1"]).startswith(f"{path}: sede: unknown key")


def test_a_deep_or_huge_set_value_is_one_line_naming_the_option():
    assert error_of("smoke", ["x=" + "[" * 600 + "]" * 600]) == (
        "--set x: not a TOML value (nested too deeply to parse)")
    assert error_of("smoke", ["x=" + "[" * 40 + "]" * 40]).startswith(
        "--set x: x[0][0]")
