"""Every experiment is a study: [data], [model], [judge] sections, the model store, pooling over
classes, a user's own model and judge, and the built-in studies at tiny sizes."""

import json
import math
import sys
import textwrap

import pyarrow.parquet as pq
import pytest
import torch

from guidelab.distributions import default_mixture
from guidelab.studies import load_spec, run_spec
from guidelab.studies.parts import exact_log_posterior
from guidelab.studies.spec import SpecError

pytestmark = pytest.mark.usefixtures("one_thread")

EXACT_1D = """
name = "pool"
trials = 48
seed = 3
keep_samples = 48
metrics = ["class_probability", "dominance"]

[distribution]
family = "gaussian_mixture"
means = [[-1.0], [0.4], [1.5]]
covariances = [0.4, 0.3, 0.5]
weights = [0.4, 0.35, 0.25]
labels = [0, 1, 2]

[sampler]
name = "ddim"
schedule = "linear"
steps = 12

[sweep]
w = [0.0, 2.0]
"""


def _write(tmp_path, text, name="spec.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _samples_by_w(out):
    table = pq.read_table(next((out / "samples").glob("*.parquet")).parent)
    return table.to_pylist()


def test_the_pooled_row_is_the_statistics_of_every_class_together(tmp_path):
    spec = load_spec(_write(tmp_path, EXACT_1D))
    result = run_spec(spec, tmp_path / "out", progress=False)
    mixture = spec.distribution_object()
    samples = [row for path in sorted((tmp_path / "out" / "samples").glob("*.parquet"))
               for row in pq.read_table(path).to_pylist()]
    assert len(result.pooled) == 2 and {row["class"] for row in result.pooled} == {"all"}
    for pooled in result.pooled:
        mine = [s for s in samples if s["w"] == pooled["w"]]
        assert len(mine) == 3 * spec.trials
        y = torch.tensor([[s["x0"]] for s in mine], dtype=torch.float64)  # [N, 1]
        c = torch.tensor([s["class"] for s in mine])  # [N]
        log_p = exact_log_posterior(mixture, y)  # [N, C], computed here, not from the store
        own = log_p[torch.arange(len(mine)), c]  # [N] log p(c_i|y_i)
        q = torch.exp(-own)
        assert pooled["n"] == len(mine)
        assert pooled["q_mean"] == pytest.approx(float(q.mean()), rel=1e-9)
        assert pooled["p_mean"] == pytest.approx(float(torch.exp(own).mean()), rel=1e-9)
        assert pooled["accuracy"] == pytest.approx(float((log_p.argmax(1) == c).double().mean()))
        # the reference: the mean of 1/p(c) over the classes (equal trials per class)
        assert pooled["inv_prior"] == pytest.approx(float((1 / mixture.class_prior).mean()))
    # results.csv holds the per-class rows and the pooled ones
    text = (tmp_path / "out" / "results.csv").read_text().splitlines()
    assert sum(line.startswith("all,") for line in text) == 2


USER_MODULE = """
import torch
from guidelab.distributions import GaussianMixture

def mixture():
    return GaussianMixture(means=[[-1.0], [0.4], [1.5]], covariances=[0.4, 0.3, 0.5],
                           weights=[0.4, 0.35, 0.25], labels=[0, 1, 2])

class Model:
    '''A score model a user brings: any object with score(x, alpha, sigma, c=None).'''
    sample_shape = (1,)
    def __init__(self, scale=1.0):
        self.inner = mixture()
        self.scale = scale
    def score(self, x, alpha, sigma, c=None):
        return self.scale * self.inner.score(x, alpha, sigma, c)

class Judge:
    '''A judge a user brings: log p(c|y) of clean samples.'''
    num_classes = 3
    def __init__(self):
        self.inner = mixture()
    def log_class_posterior(self, x, alpha=1.0, sigma=0.0):
        return self.inner.log_class_posterior(x.to(torch.float64), 1.0, 0.0)

def make_model(scale=1.0):
    return Model(scale)

def make_judge():
    return Judge()
"""


def test_a_model_and_a_judge_from_a_users_module_run_through_a_study(tmp_path, monkeypatch):
    (tmp_path / "my_guidance_parts.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_guidance_parts", None)
    exact = load_spec(_write(tmp_path, EXACT_1D), ["metrics=['class_probability']",
                                                    "keep_samples=0"])
    user = load_spec(_write(tmp_path, EXACT_1D.replace("[distribution]", "[unused]")
                            .split("[unused]")[0] + textwrap.dedent("""
        [model]
        kind = "python"
        factory = "my_guidance_parts:make_model"
        options = { scale = 1.0 }
        num_classes = 3

        [judge]
        kind = "python"
        factory = "my_guidance_parts:make_judge"

        [sampler]
        name = "ddim"
        schedule = "linear"
        steps = 12

        [sweep]
        w = [0.0, 2.0]
        class = [0, 1, 2]
        """), "user.toml"), ["metrics=['class_probability']", "keep_samples=0"])
    assert user.distribution is None and user.model.kind == "python"
    a = run_spec(exact, tmp_path / "exact", progress=False)
    b = run_spec(user, tmp_path / "user", progress=False)
    # the same scores, the same noise, the same judge: the same numbers, up to float32
    # rounding (the family fuses CFG in one pass, the user's model is called twice)
    for row_a, row_b in zip(a.rows, b.rows, strict=True):
        assert row_b["q_mean"] == pytest.approx(row_a["q_mean"], rel=1e-5)
        assert row_b["frac_p_decreased"] == row_a["frac_p_decreased"]
    assert b.rows[0]["inv_prior"] is None  # no exact family: no identity to compare with
    with pytest.raises(SpecError, match=r"--set model.factory: model.factory: .*nothing"):
        load_spec(tmp_path / "user.toml", ["model.factory='my_guidance_parts:nothing'"])


DIGITS_TINY = [
    "trials=12", "sweep.w=[0, 2]", "sweep.class=[0, 3]", "model.steps=30",
    "guidance.classifier.steps=20", "sampler.steps=12", "judge.inverse_regularisation=[1.0]",
    "judge.folds=2",
]


def test_digits_is_a_study_whose_models_are_built_once(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.setenv("GUIDELAB_CACHE", str(tmp_path / "cache"))
    spec = load_spec("li-jiao-digits", DIGITS_TINY)
    messages = []
    first = run_spec(spec, tmp_path / "a", progress=False, log=messages.append)
    built = [m for m in messages if "building" in m]
    assert len(built) == 3  # the denoiser, the judge, the noisy classifier
    store = sorted(p.name for p in (tmp_path / "cache" / "models").glob("*.safetensors"))
    assert [name.split("-")[0] for name in store] == ["classifier", "denoiser", "judge"]
    # rows: 2 classes x 2 rules x 2 strengths, pooled rows per rule and strength
    assert len(first.rows) == 8 and len(first.pooled) == 4
    row = first.rows[0]
    assert 0 <= row["ece_top"] <= 1 and row["judge_n"] > 0 and row["real_q"] >= 1
    assert json.loads(row["calibration"])["bins"] == 10
    assert row["inv_prior"] is None and row["dom_verdict"] in ("holds", "fails", "undecided")
    # the training metric: the denoiser's final loss is the mean of its last 10% of steps
    losses = json.loads(row["training_losses"])
    assert row["training_steps"] == 30 and row["training_loss"] > 0 and len(losses) > 0
    # a second study with the same sections loads every artifact: nothing is trained again
    messages.clear()
    again = run_spec(spec, tmp_path / "b", progress=False, log=messages.append)
    assert not [m for m in messages if "building" in m]
    assert [r["q_mean"] for r in again.rows] == [r["q_mean"] for r in first.rows]
    # an artifact that did not finish (its file missing) is the only one built again
    next((tmp_path / "cache" / "models").glob("classifier-*.safetensors")).unlink()
    from guidelab.studies import parts

    parts._PARTS_CACHE.clear()
    messages.clear()
    run_spec(spec, tmp_path / "c", progress=False, log=messages.append)
    assert [m.split(":")[0] for m in messages if "building" in m] == ["classifier"]


def test_sections_are_checked_before_anything_runs(tmp_path):
    with pytest.raises(SpecError, match=r"model\.part: unknown data part 'nowhere'"):
        load_spec("li-jiao-digits", ["model.part='nowhere'"])
    with pytest.raises(SpecError, match=r"judge\.kind: kind 'exact' .*\[distribution\]"):
        load_spec("li-jiao-digits", ["judge={kind = 'exact'}"])
    with pytest.raises(SpecError, match=r"model\.kind: expected one of"):
        load_spec("smoke", ["model.kind='magic'"])
    with pytest.raises(SpecError, match=r"judge\.path: no such file"):
        load_spec("smoke", [f"judge={{kind = 'checkpoint', path = '{tmp_path / 'x'}'}}"])
    with pytest.raises(SpecError, match=r"data\.parts: expected fractions summing to 1"):
        load_spec("li-jiao-digits", ["data.parts={train = 0.5, judge = 0.2, heldout = 0.2}"])
    with pytest.raises(SpecError, match=r"unknown key \(did you mean 'steps'\?"):
        load_spec("li-jiao-digits", ["model.stepz=3"])


def test_support_leak_counts_mass_outside_the_box(tmp_path):
    spec = load_spec("support-leak", ["trials=200", "sweep.w=[0, 4]",
                                      "sweep.\"model.eps\"=[0.0, 0.1]",
                                      "sweep.\"model.perturbation\"=['bias']"])
    result = run_spec(spec, tmp_path, progress=False)
    by_eps = {}
    for row in result.pooled:
        by_eps[(row["model.eps"], row["w"])] = row
    # exact scores never leave the support; a biased score at w = 4 does
    assert by_eps[(0.0, 0.0)]["n_outside"] == 0 and by_eps[(0.0, 4.0)]["n_outside"] == 0
    leak = by_eps[(0.1, 4.0)]
    assert leak["n_outside"] > 0 and leak["outside_low"] > 0
    assert leak["outside"] == pytest.approx(leak["n_outside"] / leak["support_n"])


def test_learned_vs_exact_sweeps_the_model_table(tmp_path, monkeypatch):
    monkeypatch.setenv("GUIDELAB_CACHE", str(tmp_path / "cache"))
    spec = load_spec("learned-vs-exact", [
        "trials=30", "sweep.w=[0, 1]", "sampler.steps=10", "data.n_per_class=200",
        "sweep.model=[{kind = 'exact'}, {kind = 'trained', hidden = 16, depth = 1, "
        "steps = 20}]"])
    result = run_spec(spec, tmp_path / "out", progress=False)
    kinds = {json.loads(row["model"])["kind"] for row in result.rows}
    assert kinds == {"exact", "trained"}
    exact = [r for r in result.rows if json.loads(r["model"])["kind"] == "exact"]
    trained = [r for r in result.rows if json.loads(r["model"])["kind"] == "trained"]
    # the score error against [distribution]: zero for the exact scores themselves, positive
    # for the network, whose final training loss is reported beside it
    assert {r["score_error"] for r in exact if r["w"] == 0.0} == {0.0}
    assert all(r["score_error"] > 0 and r["training_loss"] > 0 for r in trained
               if r["w"] == 0.0)
    # the exact model's unguided Q estimates 1/p(c) (its identity) within the interval's reach
    for row in exact:
        if row["w"] == 0.0:
            assert row["inv_prior"] == pytest.approx(
                float(1 / default_mixture().class_prior[row["class"]]))
            assert math.isfinite(row["q_mean"])


def _run_digits_until(tmp_path, out, stop_when, env):
    """Start `guidelab run li-jiao-digits` (tiny) in a subprocess and SIGKILL it as soon as
    ``stop_when()`` holds; returns whether it was still running then."""
    import os
    import signal
    import subprocess
    import time

    command = [sys.executable, "-c", "from guidelab.cli import app; app()", "run",
               "li-jiao-digits", "--out", str(out), "--quiet", "--no-report",
               *[arg for item in DIGITS_TINY for arg in ("--set", item)]]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, **env})
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None and not stop_when():
        time.sleep(0.02)
    running = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    return running, process.stderr.read().decode()[-2000:]


def test_digits_killed_while_sampling_or_training_resumes_without_retraining(tmp_path,
                                                                            monkeypatch):
    pytest.importorskip("sklearn")
    from guidelab.studies import ResultStore, parts
    from guidelab.studies.units import expand_units

    cache = tmp_path / "cache"
    monkeypatch.setenv("GUIDELAB_CACHE", str(cache))
    models = cache / "models"
    spec = load_spec("li-jiao-digits", DIGITS_TINY)
    # killed while the noisy classifier trains: the denoiser and the judge are finished files
    running, stderr = _run_digits_until(
        tmp_path, tmp_path / "a", lambda: (models / ".").exists() and any(
            p.name.startswith("judge-") and p.suffix == ".safetensors"
            for p in models.iterdir()), {"GUIDELAB_CACHE": str(cache)})
    assert running, stderr
    finished = sorted(p.name.split("-")[0] for p in models.glob("*.safetensors"))
    assert "denoiser" in finished and "judge" in finished
    parts._PARTS_CACHE.clear()
    messages = []
    run_spec(spec, tmp_path / "b", progress=False, log=messages.append)
    rebuilt = [m.split(":")[0] for m in messages if "building" in m]
    assert rebuilt == [name for name in ("classifier",) if name not in finished]
    # killed while sampling (a unit file written): the rerun computes only the missing units
    units = tmp_path / "c" / "units"
    running, stderr = _run_digits_until(
        tmp_path, tmp_path / "c", lambda: units.exists() and any(
            p.suffix == ".parquet" and not p.name.startswith(".") for p in units.iterdir()),
        {"GUIDELAB_CACHE": str(cache)})
    assert running, stderr
    done = ResultStore(tmp_path / "c").finished()
    total = {u.id for u in expand_units(spec)}
    assert 1 <= len(done) < len(total)
    messages.clear()
    resumed = run_spec(spec, tmp_path / "c", progress=False, log=messages.append)
    assert set(resumed.computed) == total - set(done)
    assert not [m for m in messages if "building" in m]


def test_a_damaged_artifact_is_moved_aside_and_built_again(tmp_path):
    from guidelab.studies.artifacts import ModelStore

    store = ModelStore(tmp_path)
    built = []

    def build():
        built.append(1)
        return {"weights": [1.0, 2.0]}, {}

    def save(value, path):
        path.write_text(json.dumps(value))

    def load(path):
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"path: {path} is damaged ({error})") from None

    first = store.get("toy", {"a": 1}, build=build, save=save, load=load)
    assert not first.cached and built == [1]
    assert store.get("toy", {"a": 1}, build=build, save=save, load=load).cached
    first.path.write_text('{"weights": [1.0, ')  # truncated
    messages = []
    again = store.get("toy", {"a": 1}, build=build, save=save, load=load, log=messages.append)
    assert not again.cached and again.value == {"weights": [1.0, 2.0]} and built == [1, 1]
    assert any("moved aside" in m for m in messages)
    assert len(list(tmp_path.glob("toy-*.damaged-*"))) == 1
