"""The study runner: row-keyed units, chunking, resuming, refusing, SIGKILL, umask, metrics."""

import json
import math
import os
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest
import torch

from guidelab.metrics import summarize_class_probability
from guidelab.metrics.record import ClassProbabilityRecord
from guidelab.noise import RowNoise
from guidelab.studies import (
    LocalBackend,
    ResultStore,
    SpecMismatchError,
    expand_units,
    load_spec,
    run_spec,
    run_unit,
)
from guidelab.studies import runner as runner_module
from guidelab.studies.measures import METRICS, Metric, register_metric

TINY = """
name = "tiny"
trials = 64
seed = 3
keep_samples = 64

[distribution]
family = "gaussian_mixture"
means = [[-1.0, 0.0], [1.0, 0.5], [0.0, -1.0]]
covariances = [[[0.5, 0.1], [0.1, 0.3]], [[0.4, 0.0], [0.0, 0.4]], [[0.3, -0.1], [-0.1, 0.6]]]
weights = [0.4, 0.3, 0.3]
labels = [0, 1, 1]

[sampler]
name = "ddpm_type"
schedule = "linear"
steps = 8

[sweep]
w = [0, 1, 3]
"""

SUMMARY = ["class", "w", "n", "q_mean", "q_se", "q_low", "q_high", "q_top_share", "p_mean",
           "accuracy", "frac_p_decreased", "inv_prior", "pareto_khat", "n_nonfinite"]


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def by_unit(rows):
    return {(r["unit_id"], r["w"]): r for r in rows}


# ----------------------------------------------------------------------------- one unit

def test_unit_rows_follow_the_row_keyed_noise(tiny):
    """A unit's samples at w are the sampler's output on RowNoise(seed, class, rows), and its
    summary is the whole-array summary of those samples' exact class posterior."""
    from guidelab.guidance import ClassifierFreeGuidance
    from guidelab.samplers import ddpm_type
    from guidelab.schedules import make_schedule

    spec = load_spec(tiny)
    result = run_unit(spec, {"class": 1})
    mixture = spec.distribution_object()
    baseline = None
    for w, row in zip([0.0, 1.0, 3.0], result.rows, strict=True):
        noise = RowNoise(3, streams=1, rows=torch.arange(64))
        x_init = noise.normal((64, 2), torch.float32)
        samples = ddpm_type(ClassifierFreeGuidance(mixture, 1, strength=w),
                            make_schedule("linear", 8), x_init, generator=noise).samples
        kept = [x for x, rw in zip(zip(result.samples["x0"], result.samples["x1"],
                                       strict=True), result.samples["w"], strict=True)
                if rw == w]
        assert torch.equal(torch.tensor(kept, dtype=torch.float64), samples.double())
        log_post = mixture.log_class_posterior(samples.double(), 1.0, 0.0)
        summary = summarize_class_probability(log_post, 1, baseline_log_posterior=baseline,
                                               inv_prior=1 / 0.6)
        assert row["q_mean"] == pytest.approx(summary.q_mean, rel=1e-13)
        assert row["p_mean"] == pytest.approx(summary.p_mean, rel=1e-13)
        assert row["accuracy"] == summary.accuracy and row["n"] == 64
        assert row["frac_p_decreased"] == summary.frac_p_decreased
        assert row["pareto_khat"] == pytest.approx(summary.pareto_khat, rel=1e-12)
        baseline = log_post if w == 0 else baseline
    assert result.rows[0]["frac_p_decreased"] is None  # w = 0 is the baseline
    stored = json.loads(result.rows[1]["record_class_probability"])
    record = ClassProbabilityRecord.from_dict(stored)
    assert record.n == 64 and record.paired


def test_any_chunks_of_rows_are_recomputed_bit_for_bit(tiny):
    """Rows [0, 128) of a 256-row unit and a 128-row unit with the same chunk boundaries are
    the same bits: a row's noise is a function of (seed, class, row index) only."""
    spec = load_spec(tiny, ["trials=256", "keep_samples=256"])
    whole = run_unit(spec, {"class": 1}, chunk_rows=64)
    part = run_unit(load_spec(tiny, ["trials=128", "keep_samples=256"]), {"class": 1},
                    chunk_rows=64)
    for w in (0.0, 1.0, 3.0):
        rows = [i for i, rw in enumerate(whole.samples["w"]) if rw == w][:128]
        rows_part = [i for i, rw in enumerate(part.samples["w"]) if rw == w]
        for column in ("x0", "x1"):
            assert [whole.samples[column][i] for i in rows] == [
                part.samples[column][i] for i in rows_part]


@pytest.mark.parametrize("chunk_rows", [8, 24, 100])
def test_other_chunkings_change_only_the_rounding(tiny, chunk_rows):
    """Other chunk boundaries give the same rows' noise; batched products may round the last
    float32 bit differently, nothing more: counts agree, moments to float32 rounding."""
    spec = load_spec(tiny, ["trials=128", "keep_samples=128"])
    whole = run_unit(spec, {"class": 1}, chunk_rows=128)
    chunked = run_unit(spec, {"class": 1}, chunk_rows=chunk_rows)
    a = torch.tensor([chunked.samples["x0"], chunked.samples["x1"]])
    b = torch.tensor([whole.samples["x0"], whole.samples["x1"]])
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)
    for x, y in zip(chunked.rows, whole.rows, strict=True):
        assert (x["n"], x["n_nonfinite"]) == (y["n"], y["n_nonfinite"])
        for column in ("q_mean", "q_se", "p_mean"):
            assert x[column] == pytest.approx(y[column], rel=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_unit_gives_the_float64_cpu_rows(tiny):
    """The same unit on CUDA and on the CPU in float64: the row-keyed noise is integer
    hashing, so the samples differ only by the devices' rounding of log, sin, cos and the
    products; counts agree exactly and the means to rounding."""
    cpu = run_unit(load_spec(tiny, ["dtype='float64'"]), {"class": 1})
    cuda = run_unit(load_spec(tiny, ["dtype='float64'", "device='cuda'"]), {"class": 1})
    a = torch.tensor([cuda.samples["x0"], cuda.samples["x1"]], dtype=torch.float64)
    b = torch.tensor([cpu.samples["x0"], cpu.samples["x1"]], dtype=torch.float64)
    assert torch.allclose(a, b, rtol=1e-9, atol=1e-9)
    for x, y in zip(cuda.rows, cpu.rows, strict=True):
        assert (x["n"], x["n_nonfinite"], x["accuracy"]) == (y["n"], y["n_nonfinite"],
                                                             y["accuracy"])
        assert x["device"] != y["device"]
        for column in ("q_mean", "q_se", "p_mean"):
            assert x[column] == pytest.approx(y[column], rel=1e-9)


def test_units_do_not_depend_on_the_thread_count(monkeypatch):
    """A unit runs with one PyTorch CPU thread whatever the process set (parallel kernels
    round differently), and the process's setting is restored."""
    spec = load_spec("li-jiao-gmm", ["reference.enabled=false", "sampler.steps=10",
                                     "sweep.w=[0, 1]", "trials=4096", "keep_samples=4096"])
    old = torch.get_num_threads()
    results = []
    try:
        for threads in (2, 1):
            torch.set_num_threads(threads)
            results.append(run_unit(spec, {"class": 0}))
            assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(old)
    assert results[0].rows == results[1].rows and results[0].samples == results[1].samples


@pytest.mark.parametrize("budget", [0, 2000])
def test_replayed_noise_is_the_generated_noise(tiny, monkeypatch, budget):
    """The strengths after the first replay the first one's recorded draws: the same bits as
    generating them again (no tape at all, or a tape that runs out part way)."""
    spec = load_spec(tiny, ['sweep."sampler.name"=["ddim", "euler_maruyama"]',
                           "sweep.class=[0]"])
    units = expand_units(spec)
    generated = []
    bits = RowNoise._bits

    def counting(self, width):
        generated.append(width)
        return bits(self, width)

    monkeypatch.setattr(RowNoise, "_bits", counting)
    taped = [run_unit(spec, u) for u in units]
    with_tape = len(generated)
    monkeypatch.setattr(runner_module, "NOISE_TAPE_BYTES", budget)
    fresh = [run_unit(spec, u) for u in units]
    assert with_tape < len(generated) - with_tape  # the tape saved generating draws
    for a, b in zip(taped, fresh, strict=True):
        assert a.rows == b.rows and a.samples == b.samples


def test_out_of_memory_halves_the_chunk_and_keeps_the_rows(tiny, monkeypatch):
    spec = load_spec(tiny)
    original = runner_module._run_chunk

    def tight(run, settings, unit, contexts, metrics, ws, start, stop, *args):
        if stop - start > 16:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")
        return original(run, settings, unit, contexts, metrics, ws, start, stop, *args)

    monkeypatch.setattr(runner_module, "_run_chunk", tight)
    messages = []
    result = run_unit(spec, {"class": 0}, chunk_rows=64, log=messages.append)
    monkeypatch.setattr(runner_module, "_run_chunk", original)
    expected = run_unit(spec, {"class": 0}, chunk_rows=16)
    assert result.rows == expected.rows and result.samples == expected.samples
    assert messages and "out of memory with 64 rows" in messages[0] and "32" in messages[0]


def test_other_errors_are_not_retried(tiny, monkeypatch):
    def broken(*args):
        raise RuntimeError("something else")

    monkeypatch.setattr(runner_module, "_run_chunk", broken)
    with pytest.raises(RuntimeError, match="something else"):
        run_unit(load_spec(tiny), {"class": 0})


# ----------------------------------------------------------------------------- the store

def test_rerun_skips_finished_units_and_recomputes_missing_ones(tiny, tmp_path):
    spec = load_spec(tiny)
    out = tmp_path / "run"
    first = run_spec(spec, out, progress=False)
    assert len(first.computed) == 2 and first.skipped == []
    again = run_spec(spec, out, progress=False)
    assert again.computed == [] and len(again.skipped) == 2
    assert again.rows == first.rows
    lost = expand_units(spec)[1].id
    (out / "units" / f"{lost}.parquet").unlink()
    third = run_spec(tiny, out, progress=False)  # from the file: the same resolved spec
    assert third.computed == [lost]
    assert third.rows == first.rows  # bit for bit, records included
    assert len(third.rows) == 2 * 3


def test_a_different_spec_into_the_same_folder_is_refused(tiny, tmp_path):
    out = tmp_path / "run"
    run_spec(load_spec(tiny), out, progress=False)
    other = load_spec(tiny, ["trials=32", "sweep.w=[0, 2]"])
    with pytest.raises(SpecMismatchError) as info:
        run_spec(other, out, progress=False)
    message = str(info.value)
    assert str(out / "spec.toml") in message and "'tiny'" in message
    assert "sweep.w" in message and "trials" in message
    assert len(ResultStore(out).finished()) == 2  # nothing was touched


def test_unit_order_and_subsets_do_not_change_the_rows(tiny, tmp_path):
    spec = load_spec(tiny, ['sweep."sampler.name"=["ddpm_type", "ddim"]'])
    forward = run_spec(spec, tmp_path / "a", backend=LocalBackend(workers=1), progress=False)
    threads = run_spec(spec, tmp_path / "t", backend=LocalBackend(workers=3), progress=False)
    assert threads.rows == forward.rows  # three units at a time, in threads

    class Reversed:
        reports_rows = False

        def run(self, spec, units, on_result, **_):
            for unit in reversed(units):
                on_result(run_unit(spec, unit))

    backward = run_spec(spec, tmp_path / "b", backend=Reversed(), progress=False)
    assert backward.computed == list(reversed(forward.computed))
    assert backward.rows == forward.rows
    one = forward.units[2].id
    alone = run_spec(spec, tmp_path / "c", units=[one], progress=False)
    assert alone.rows == [r for r in forward.rows if r["unit_id"] == one]


def test_files_are_atomic_and_follow_the_umask(tiny, tmp_path):
    old = os.umask(0o027)
    try:
        out = tmp_path / "run"
        run_spec(load_spec(tiny), out, progress=False)
    finally:
        os.umask(old)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"spec.toml", "results.csv"}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path
        assert not path.name.endswith(".tmp")
    assert len(list((out / "units").glob("*.parquet"))) == 2
    assert len(list((out / "samples").glob("*.parquet"))) == 2


def test_output_folder_problems_are_value_errors(tiny, tmp_path):
    spec = load_spec(tiny)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="out: .* is a file"):
        run_spec(spec, a_file, progress=False)
    with pytest.raises(ValueError, match="out: .* is a file"):
        run_spec(spec, a_file / "below", progress=False)
    stray = tmp_path / "stray"
    (stray / "units").mkdir(parents=True)
    (stray / "units" / "x.parquet").write_bytes(b"")
    with pytest.raises(ValueError, match="spec.toml is missing"):
        run_spec(spec, stray, progress=False)


def test_samples_store_the_first_rows_of_every_w(tiny, tmp_path):
    out = tmp_path / "run"
    run_spec(load_spec(tiny, ["keep_samples=10"]), out, progress=False)
    samples = ResultStore(out).read_samples().to_pylist()
    assert len(samples) == 2 * 3 * 10
    assert {s["row"] for s in samples} == set(range(10))
    assert {(s["class"], s["w"]) for s in samples} == {(c, w) for c in (0, 1)
                                                        for w in (0.0, 1.0, 3.0)}
    assert all(math.isfinite(s["x0"]) and math.isfinite(s["x1"]) for s in samples)


# ----------------------------------------------------------------------------- SIGKILL

def test_a_sweep_killed_with_sigkill_resumes_to_the_same_rows(tmp_path):
    text = TINY.replace("trials = 64", "trials = 256").replace("steps = 8", "steps = 20")
    text = text.replace("w = [0, 1, 3]", "w = [0, 1, 3]\nseed = [0, 1, 2]")
    spec_path = tmp_path / "kill.toml"
    spec_path.write_text(text)
    spec = load_spec(spec_path)
    total = len(expand_units(spec))
    killed = tmp_path / "killed"
    command = [sys.executable, "-c", "from guidelab.cli import app; app()", "run",
               str(spec_path), "--out", str(killed), "--quiet", "--no-report"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    units_dir = killed / "units"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if units_dir.exists() and any(p.suffix == ".parquet" and not p.name.startswith(".")
                                      for p in units_dir.iterdir()):
            break
        time.sleep(0.02)
    still_running = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert still_running, process.stderr.read().decode()[-2000:]
    done = ResultStore(killed).finished()
    assert 1 <= len(done) < total
    resumed = run_spec(spec_path, killed, progress=False)
    assert set(resumed.computed) == {u.id for u in expand_units(spec)} - done
    fresh = run_spec(spec, tmp_path / "fresh", progress=False)
    assert len(resumed.rows) == len(fresh.rows) == total * 3
    assert len(by_unit(resumed.rows)) == len(resumed.rows)  # no unit duplicated
    assert resumed.rows == fresh.rows  # none lost, every value identical


# ----------------------------------------------------------------------------- metrics, rules

@dataclass
class MeanRecord:
    n: int
    total: float

    def merge(self, other):
        return MeanRecord(self.n + other.n, self.total + other.total)

    def to_dict(self):
        return {"n": self.n, "total": self.total}


def test_a_registered_metric_plugs_in_without_touching_the_runner(tiny, tmp_path):
    metric = Metric(
        "mean_x0",
        measure=lambda ctx: MeanRecord(ctx.stop - ctx.start, float(ctx.samples[:, 0].double()
                                                                    .sum())),
        summarize=lambda record, unit: {"mean_x0": record.total / record.n},
        load=lambda d: MeanRecord(**d))
    register_metric(metric)
    try:
        spec = load_spec(tiny, ['metrics=["class_probability", "mean_x0"]'])
        result = run_spec(spec, tmp_path / "run", chunk_rows=16, progress=False)
    finally:
        METRICS.pop("mean_x0")
    for row in result.rows:
        samples = [s for s in ResultStore(tmp_path / "run").read_samples().to_pylist()
                   if s["unit_id"] == row["unit_id"] and s["w"] == row["w"]]
        assert row["mean_x0"] == pytest.approx(sum(s["x0"] for s in samples) / 64, rel=1e-12)
        assert json.loads(row["record_mean_x0"])["n"] == 64


def test_classifier_guidance_equals_cfg_for_exact_scores(tiny):
    """With exact scores and the exact posterior, grad log p_t(c|x) = s(x|c) - s(x): both rules
    drive the coupled rows to the same samples up to float32 rounding."""
    cfg = run_unit(load_spec(tiny), {"class": 1})
    classifier = run_unit(load_spec(tiny, ['guidance.rule="classifier"']), {"class": 1})
    for a, b in zip(cfg.rows, classifier.rows, strict=True):
        assert a["q_mean"] == pytest.approx(b["q_mean"], rel=1e-4)
        assert b["rule"] == "classifier" and a["rule"] == "cfg"
    x = torch.tensor(cfg.samples["x0"]), torch.tensor(classifier.samples["x0"])
    assert torch.allclose(*x, atol=1e-4)


def test_interval_guidance_outside_the_interval_is_unguided(tiny):
    """Guidance limited to sigma in (2, 3] never acts (sigma <= 1): every w gives the w = 0
    samples, bit for bit."""
    result = run_unit(load_spec(tiny, ['guidance.strength={kind="interval", lo=2.0, hi=3.0}']),
                      {"class": 0})
    q = [row["q_mean"] for row in result.rows]
    assert q[0] == q[1] == q[2]
    assert all(row["frac_p_decreased"] in (None, 0.0) for row in result.rows)
    assert result.rows[1]["strength_schedule"] == "interval(sigma in (2, 3])"


def test_zero_densities_of_a_uniform_box(tmp_path):
    """Disjoint boxes: inside class c's box p(c|y) = 1 exactly (the other class's 0 is kept as
    the most negative float64, not dropped); outside every box the row is NaN (counted)."""
    from guidelab.distributions import UniformBoxMixture
    from guidelab.studies.parts import exact_log_posterior as clean_log_posterior

    boxes = UniformBoxMixture(lows=[[-2.0], [0.5]], highs=[[-1.0], [2.5]], weights=[0.5, 0.5],
                              labels=[0, 1])
    log_post = clean_log_posterior(boxes, torch.tensor([[-1.5], [1.0], [0.0], [math.nan]]))
    assert log_post[0, 0] == 0 and log_post[1, 1] == 0
    assert log_post[0, 1] == log_post[1, 0] == torch.finfo(torch.float64).min
    assert torch.isnan(log_post[2:]).all()
    path = tmp_path / "boxes.toml"
    path.write_text("""
name = "boxes"
trials = 200
[distribution]
family = "uniform_box"
lows = [[-2.0], [0.5]]
highs = [[-1.0], [2.5]]
weights = [0.5, 0.5]
labels = [0, 1]
[sampler]
name = "ddpm_type"
schedule = "linear"
steps = 5
[sweep]
w = [0, 1]
""")
    result = run_unit(load_spec(path), {"class": 0})
    for row in result.rows:
        assert row["n"] + row["n_nonfinite"] == 200
        assert row["q_mean"] == 1.0 if row["n_nonfinite"] == 0 else row["q_mean"] >= 1
