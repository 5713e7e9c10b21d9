"""Study specs: built-ins, TOML round trips, --set, and one-line errors naming file and key."""

import json
import tomllib

import pytest

from guidelab.distributions import default_mixture
from guidelab.studies import default_strengths
from guidelab.studies.spec import (
    SpecError,
    builtin_spec_text,
    builtin_specs,
    load_spec,
    parse_set,
    spec_diff,
    spec_to_dict,
    spec_to_toml,
)
from guidelab.studies.units import expand_units, make_unit

TINY = """
name = "tiny"
trials = 40
seed = 3

[distribution]
family = "gaussian_mixture"
means = [[-1.0, 0.0], [1.0, 0.5]]
covariances = [[[0.5, 0.1], [0.1, 0.3]], [[0.4, 0.0], [0.0, 0.4]]]
weights = [0.6, 0.4]
labels = [0, 1]

[sampler]
name = "ddim"
schedule = "linear"
steps = 10
options = { eta = 0.5 }

[sweep]
w = [0, 2]
"""


def write(tmp_path, text, name="study.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(source, overrides=()):
    with pytest.raises(SpecError) as info:
        load_spec(source, overrides)
    return str(info.value)


def test_builtin_specs_are_listed_and_load():
    names = builtin_specs()
    assert {"li-jiao-gmm", "smoke"} <= set(names)
    assert all(names.values())  # every built-in has a description
    for name in names:
        spec = load_spec(name)
        assert spec.name == name
        assert expand_units(spec)


def test_li_jiao_gmm_keeps_the_experiments_defaults():
    spec = load_spec("li-jiao-gmm")
    assert spec.trials == 10_000 and spec.seed == 0 and spec.dtype == "float32"
    assert spec.w == default_strengths()
    assert (spec.sampler.name, spec.sampler.schedule, spec.sampler.steps) == (
        "ddpm_type", "li_jiao", 1000)
    assert spec.reference.enabled and spec.reference.steps == 50
    assert spec.classes == [0, 1, 2]
    mixture, expected = spec.distribution_object(), default_mixture()
    assert (mixture.means == expected.means).all()
    assert (mixture.covariances == expected.covariances).all()
    assert (mixture.weights == expected.weights).all()
    units = expand_units(spec)
    assert len(units) == 6 and sum(u.reference for u in units) == 3


@pytest.mark.parametrize("source", ["li-jiao-gmm", "smoke", "tiny"])
def test_resolved_spec_round_trips_through_toml(tmp_path, source):
    if source == "tiny":
        source = write(tmp_path, TINY + '\n[guidance]\nrule = "classifier"\n'
                       'strength = { kind = "interval", lo = 0.1, hi = 0.9 }\n')
    spec = load_spec(source)
    again = load_spec(write(tmp_path, spec_to_toml(spec), "again.toml"))
    assert spec_to_dict(again) == spec_to_dict(spec)
    assert spec_diff(spec, again) == []
    # the shipped file is valid TOML a user can copy
    if source in builtin_specs():
        tomllib.loads(builtin_spec_text(source))


def test_resolution_fills_defaults_and_puts_w_0_first(tmp_path):
    spec = load_spec(write(tmp_path, TINY.replace("w = [0, 2]", "w = [2, 0, 0.5]")))
    assert spec.sweep["w"] == [0.0, 2.0, 0.5]
    assert spec.sweep["class"] == [0, 1]
    assert spec.metrics == ["class_probability"]
    assert spec.guidance.rule == "cfg"


# ----------------------------------------------------------------------------- malformed specs

def test_typo_in_a_key_names_file_and_key(tmp_path):
    path = write(tmp_path, TINY.replace("trials = 40", "trails = 40"))
    message = error_of(path)
    assert message.startswith(f"{path}: trails: unknown key")
    assert "did you mean 'trials'" in message
    assert "\n" not in message


def test_typo_in_a_nested_key_names_the_dotted_path(tmp_path):
    path = write(tmp_path, TINY.replace("steps = 10", "stpes = 10"))
    message = error_of(path)
    assert message.startswith(f"{path}: sampler.stpes: unknown key")
    assert "did you mean 'steps'" in message


def test_typo_in_a_family_parameter_names_the_dotted_path(tmp_path):
    path = write(tmp_path, TINY.replace("weights =", "wieghts ="))
    assert error_of(path).startswith(f"{path}: distribution.")  # wieghts unknown / weights missing


def test_wrong_type_names_file_and_key(tmp_path):
    path = write(tmp_path, TINY.replace("trials = 40", 'trials = "many"'))
    message = error_of(path)
    assert message.startswith(f"{path}: trials: expected a valid integer")
    assert "'many'" in message
    path = write(tmp_path, TINY.replace("steps = 10", "steps = 10.5"), "b.toml")
    assert error_of(path).startswith(f"{path}: sampler.steps: expected a valid integer")


def test_negative_trial_count_names_file_and_key(tmp_path):
    path = write(tmp_path, TINY.replace("trials = 40", "trials = -3"))
    assert error_of(path) == f"{path}: trials: expected a positive integer, got -3"


@pytest.mark.parametrize("change,path_and_message", [
    (("family = \"gaussian_mixture\"", "family = \"gaussian\""), "distribution.family: expected"),
    (("weights = [0.6, 0.4]", "weights = [0.6, 0.4, 0.1]"), "distribution.weights: expected"),
    (("[[0.5, 0.1], [0.1, 0.3]]", "[[0.5, 0.9], [0.9, 0.3]]"), "distribution.covariances:"),
    (("name = \"ddim\"", "name = \"magic\""), "sampler.name: unknown sampler 'magic'"),
    (("schedule = \"linear\"", "schedule = \"sigmoid\""), "sampler.schedule: unknown schedule"),
    (("options = { eta = 0.5 }", "options = { etta = 0.5 }"),
     "sampler.options.etta: unknown option of sampler 'ddim'"),
    (("w = [0, 2]", "w = [1, 2]"), "sweep.w: must include 0"),
    (("w = [0, 2]", "w = [0, -1]"), "sweep.w: w = -1 < 0 guides away"),
    (("w = [0, 2]", "w = [0, \"x\"]"), "sweep.w[1]: expected a finite number"),
    (("w = [0, 2]", "w = [0, 2]\nclass = [0, 5]"), "sweep.class[1]: unknown class 5"),
    (("w = [0, 2]", "w = [0, 2]\ndevice = [\"cpu\"]"), "sweep.device: device cannot be swept"),
    (("w = [0, 2]", "w = [0, 2]\n\"sampler.name\" = [\"ddim\", \"magic\"]"),
     "sweep.\"sampler.name\"[1]: unknown sampler 'magic'"),
    (("w = [0, 2]", "w = [0, 2]\n\"sampler.nmae\" = [\"ddim\"]"),
     "sweep.\"sampler.nmae\": unknown key sampler.nmae (did you mean 'name'?"),
    (("seed = 3", "seed = 3\nmetrics = [\"accuracy\"]"), "metrics[0]: unknown metric"),
    (("seed = 3", "seed = 3\ndevice = \"tpu\""), "device: expected 'cpu'"),
])
def test_meaningless_values_are_named_by_key(tmp_path, change, path_and_message):
    path = write(tmp_path, TINY.replace(*change))
    assert error_of(path).startswith(f"{path}: {path_and_message}")


def test_li_jiao_schedule_with_too_few_steps_is_a_spec_error(tmp_path):
    path = write(tmp_path, TINY.replace('schedule = "linear"', 'schedule = "li_jiao"')
                 .replace("steps = 10", "steps = 5"))
    message = error_of(path)
    assert message.startswith(f"{path}: sampler.steps: li_jiao schedule with steps = 5")
    assert "c1 log T / T" in message


def test_reference_needs_a_gaussian_mixture(tmp_path):
    boxes = TINY.replace('family = "gaussian_mixture"', 'family = "uniform_box"').replace(
        "means = [[-1.0, 0.0], [1.0, 0.5]]", "lows = [[-1.0, 0.0], [1.0, 0.5]]").replace(
        "covariances = [[[0.5, 0.1], [0.1, 0.3]], [[0.4, 0.0], [0.0, 0.4]]]",
        "highs = [[0.0, 1.0], [2.0, 1.5]]")
    load_spec(write(tmp_path, boxes, "boxes.toml"))  # valid without a reference
    path = write(tmp_path, boxes + "\n[reference]\nenabled = true\n")
    assert error_of(path).startswith(f"{path}: reference.enabled: the exact reverse kernel "
                                     f"needs a Gaussian mixture")


def test_class_probability_needs_a_density(tmp_path):
    text = """
name = "points"
trials = 10
[distribution]
family = "empirical"
points = [[0.0], [1.0]]
labels = [0, 1]
[sweep]
w = [0]
"""
    path = write(tmp_path, text)
    assert error_of(path).startswith(f"{path}: distribution.bandwidth: the class_probability")
    load_spec(write(tmp_path, text.replace("labels = [0, 1]", "labels = [0, 1]\nbandwidth = 0.1"),
                    "blurred.toml"))


def test_invalid_toml_names_the_file(tmp_path):
    path = write(tmp_path, TINY.replace("trials = 40", "trials = = 40"))
    assert error_of(path).startswith(f"{path}: not valid TOML")


def test_unknown_source_names_the_builtins():
    message = error_of("no-such-study")
    assert message.startswith("no-such-study: no such file, and not the name of a built-in")
    assert "li-jiao-gmm" in message


# ----------------------------------------------------------------------------- --set

@pytest.mark.parametrize("text,expected", [
    ("trials=400", ("trials", 400)),
    ("sweep.w=[0, 1, 10]", ("sweep.w", [0, 1, 10])),
    ("sampler.name=ddim", ("sampler.name", "ddim")),
    ("sampler.name='ddim'", ("sampler.name", "ddim")),
    ("guidance.allow_negative=true", ("guidance.allow_negative", True)),
    ("sampler.options={ eta = 0.5 }", ("sampler.options", {"eta": 0.5})),
    ('sweep."sampler.name"=["ddim", "ddpm_type"]',
     ('sweep."sampler.name"', ["ddim", "ddpm_type"])),
    ("device = cuda:1", ("device", "cuda:1")),
])
def test_set_values_are_toml_literals(text, expected):
    assert parse_set(text) == expected


@pytest.mark.parametrize("text", ["trials", "=3", "sweep.w=[0, 1", "name=two words"])
def test_unparseable_set_is_named(text):
    with pytest.raises(SpecError, match=r"^--set "):
        parse_set(text)


def test_set_overrides_are_validated_like_the_file(tmp_path):
    path = write(tmp_path, TINY)
    spec = load_spec(path, ["trials=400", "sweep.w=[0, 1, 10]", "sampler.options.eta=1.0"])
    assert spec.trials == 400 and spec.w == [0.0, 1.0, 10.0] and spec.sampler.options == {
        "eta": 1.0}
    assert error_of(path, ["trials=-3"]) == "--set trials: trials: expected a positive integer, " \
                                            "got -3"
    assert error_of(path, ["trials=1.5"]).startswith("--set trials: trials: expected a valid "
                                                     "integer")
    assert error_of(path, ["sampler.nmae=ddim"]).startswith(
        "--set sampler.nmae: sampler.nmae: unknown key (did you mean 'name'?")
    assert error_of(path, ['sweep."sampler.name"=["ddim", "magic"]']).startswith(
        '--set sweep."sampler.name": sweep."sampler.name"[1]: unknown sampler \'magic\'')
    # a problem elsewhere in the file is still reported against the file
    bad = write(tmp_path, TINY.replace("seed = 3", "seed = -1"), "bad.toml")
    assert error_of(bad, ["trials=5"]).startswith(f"{bad}: seed: expected a number >= 0")


# ----------------------------------------------------------------------------- units

def test_units_cover_the_sweep_and_ids_depend_only_on_the_key(tmp_path):
    text = TINY.replace("w = [0, 2]", 'w = [0, 2]\nseed = [1, 2]\n"sampler.name" = ["ddim", '
                                      '"ddpm_type"]')
    text = text.replace("options = { eta = 0.5 }", "")
    spec = load_spec(write(tmp_path, text))
    units = expand_units(spec)
    assert len(units) == 2 * 2 * 2  # seed x sampler x class
    assert len({u.id for u in units}) == len(units)
    assert {u.as_dict()["seed"] for u in units} == {1, 2}
    # the same key in another order, another spec with that key: the same id
    unit = units[3]
    assert make_unit(dict(reversed(unit.key))).id == unit.id
    reordered = text.replace('seed = [1, 2]\n"sampler.name" = ["ddim", "ddpm_type"]',
                             '"sampler.name" = ["ddim", "ddpm_type"]\nseed = [1, 2]')
    other = expand_units(load_spec(write(tmp_path, reordered, "b.toml")))
    assert {u.id for u in other} == {u.id for u in units}
    assert json.dumps(unit.as_dict())  # keys are JSON-able


def test_the_documented_example_is_a_valid_spec(tmp_path):
    import textwrap

    import guidelab.studies.spec as module

    block = module.__doc__.split(".. code-block:: toml")[1].split("\nValidation")[0]
    spec = load_spec(write(tmp_path, textwrap.dedent(block)))
    assert spec.name == "my-study" and spec.sweep["class"] == [0, 1]
    assert len(expand_units(spec)) == 2 + 2 * 2  # references + classes x samplers
