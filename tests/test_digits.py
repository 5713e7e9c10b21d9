"""li-jiao-digits: the split, the calibration error, the pooled statistic and a tiny run."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

from sklearn.calibration import calibration_curve  # noqa: E402

from guidelab.studies.li_jiao_digits import (  # noqa: E402
    RESULT_COLUMNS,
    DigitsConfig,
    expected_calibration_error,
    load_digits_split,
    pooled_summary,
    reliability_bins,
    run_li_jiao_digits,
    summary_rows,
)


def test_split_is_stratified_disjoint_and_covering():
    split = load_digits_split(seed=3)
    a, b, c = split.index_a, split.index_b, split.index_c
    assert len(set(a) & set(b)) == len(set(a) & set(c)) == len(set(b) & set(c)) == 0
    assert sorted(np.concatenate([a, b, c]).tolist()) == list(range(1797))
    counts = np.bincount(split.labels, minlength=10)  # [10]
    for index, share in ((a, 0.5), (b, 0.25), (c, 0.25)):
        part = np.bincount(split.labels[index], minlength=10)  # [10]
        # stratified: each class's count is its share of the class, to within one image
        assert np.all(np.abs(part - share * counts) <= 1.0 + 1e-9)
    # pixels 0..16 map onto [-1, 1]
    assert split.images.min() == -1.0 and split.images.max() == 1.0
    again = load_digits_split(seed=3)
    assert np.array_equal(again.index_b, b)
    assert not np.array_equal(load_digits_split(seed=4).index_b, b)


def test_split_rejects_bad_fractions():
    with pytest.raises(ValueError, match="^fractions"):
        load_digits_split(fractions=(0.5, 0.5, 0.1))


def _random_probabilities(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * 2.0  # [n, k]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(k, p=p) for p in probabilities ** 1.3 /
                       (probabilities ** 1.3).sum(axis=1, keepdims=True)])  # miscalibrated
    return probabilities, labels


def _ece_from_calibration_curve(predicted, outcome, bins: int) -> float:
    """sum_k (n_k / n) |freq_k - mean_k| with sklearn's calibration_curve (uniform bins)."""
    frequency, mean = calibration_curve(outcome, predicted, n_bins=bins, strategy="uniform")
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.searchsorted(edges[1:-1], predicted)  # sklearn's own binning rule
    counts = np.bincount(index, minlength=bins)
    counts = counts[counts > 0]
    return float((counts / len(predicted) * np.abs(frequency - mean)).sum())


@pytest.mark.parametrize("bins", [5, 10, 15])
def test_top_label_ece_matches_sklearn_calibration_curve(bins):
    probabilities, labels = _random_probabilities(3000, 10, seed=bins)
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == labels).astype(int)
    expected = _ece_from_calibration_curve(confidence, correct, bins)
    assert expected_calibration_error(probabilities, labels, bins=bins) == pytest.approx(
        expected, abs=1e-12)


def test_classwise_ece_matches_sklearn_calibration_curve():
    probabilities, labels = _random_probabilities(2000, 4, seed=1)
    expected = np.mean([_ece_from_calibration_curve(probabilities[:, c],
                                                    (labels == c).astype(int), 10)
                        for c in range(4)])
    assert expected_calibration_error(probabilities, labels, kind="classwise") == pytest.approx(
        expected, abs=1e-12)


def test_ece_direct_loop_and_reliability_counts():
    probabilities, labels = _random_probabilities(500, 3, seed=2)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    total = 0.0
    for k in range(10):  # bins (k/10, (k+1)/10], the first closed at 0
        low, high = k / 10, (k + 1) / 10
        inside = (confidence > low) & (confidence <= high) if k else confidence <= high
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    assert expected_calibration_error(probabilities, labels) == pytest.approx(total, abs=1e-12)
    table = reliability_bins(probabilities, labels, kind="classwise")
    assert table["count"].sum() == probabilities.size


def test_ece_rejects_bad_input():
    with pytest.raises(ValueError, match="^probabilities"):
        expected_calibration_error(np.ones((3, 2)) * 2, np.array([0, 1, 0]))
    with pytest.raises(ValueError, match="^labels"):
        expected_calibration_error(np.full((3, 2), 0.5), np.array([0, 2, 0]))
    with pytest.raises(ValueError, match="^bins"):
        expected_calibration_error(np.full((3, 2), 0.5), np.array([0, 1, 0]), bins=0)


def _log_posteriors(n: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g, dtype=torch.float64) * 3.0  # [n, k]
    return torch.log_softmax(logits, dim=1)


def test_pooled_summary_equals_direct_mean_of_reciprocals():
    n, k = 600, 10
    log_posterior = _log_posteriors(n, k, seed=0)  # [n, k]
    baseline = _log_posteriors(n, k, seed=1)  # [n, k]
    labels = torch.arange(k).repeat_interleave(n // k)  # [n]
    summary = pooled_summary(log_posterior, labels, baseline_log_posterior=baseline)
    p = log_posterior.exp().numpy()[np.arange(n), labels.numpy()]  # [n]
    p_base = baseline.exp().numpy()[np.arange(n), labels.numpy()]
    assert summary.n == n
    assert summary.q_mean == pytest.approx(np.mean(1.0 / p), rel=1e-12)
    assert summary.q_se == pytest.approx(np.std(1.0 / p, ddof=1) / math.sqrt(n), rel=1e-9)
    assert summary.p_mean == pytest.approx(p.mean(), rel=1e-12)
    assert summary.accuracy == pytest.approx(
        np.mean(log_posterior.numpy().argmax(axis=1) == labels.numpy()))
    assert summary.frac_p_decreased == pytest.approx(np.mean(p < p_base))
    rows = summary_rows(log_posterior, labels, info={"model": "m"})
    assert [r["class"] for r in rows] == [*range(k), "all"]
    assert rows[-1]["q_mean"] == pytest.approx(np.mean(1.0 / p), rel=1e-12)
    for c in range(k):
        mask = labels.numpy() == c
        assert rows[c]["q_mean"] == pytest.approx(np.mean(1.0 / p[mask]), rel=1e-12)


def test_pooled_summary_keeps_rows_with_p_equal_to_one_and_counts_nan_rows():
    # p = 1 exactly in float64 (log(1 - p) would be -inf and drop the row) and a NaN row
    log_posterior = torch.tensor([[0.0, -800.0], [math.log(0.4), math.log(0.6)],
                                  [math.nan, math.nan]], dtype=torch.float64)
    summary = pooled_summary(log_posterior, torch.tensor([0, 1, 0]))
    assert summary.n == 2 and summary.n_nonfinite == 1
    assert summary.q_mean == pytest.approx((1.0 + 1.0 / 0.6) / 2)
    assert summary.accuracy == pytest.approx(1.0)


TINY = dict(trials=4, strengths=(0.0, 1.0), steps=10, hidden=16, depth=1, classifier_hidden=16,
            classifier_depth=1, denoiser_steps=3, classifier_steps=2, batch_size=16,
            evaluator_grid=(1.0,), evaluator_folds=2, grid_columns=2)


def test_tiny_end_to_end_writes_results_and_pictures_and_hits_the_cache(tmp_path):
    from matplotlib.image import imread

    from guidelab.report.digits import write_digits_report

    config = DigitsConfig(cache_dir=tmp_path / "cache", **TINY)
    result = run_li_jiao_digits(config, out_dir=tmp_path / "out", progress=False)
    assert result.training["denoiser"]["cached"] is False
    paths = write_digits_report(result, tmp_path / "out")
    with open(tmp_path / "out" / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:len(RESULT_COLUMNS)] == RESULT_COLUMNS
    keys = {(r["model"], r["guidance"], r["w"]) for r in rows if r["class"] == "all"}
    assert ("real", "none", "") in keys
    for model in ("network", "kernel"):
        for w in ("0.0", "1.0"):
            assert (model, "cfg", w) in keys
    assert ("network", "classifier", "1.0") in keys
    assert all(int(r["n"]) + int(r["n_nonfinite"]) == 40 for r in rows
               if r["class"] == "all" and r["model"] != "real")
    for path in paths.values():
        image = imread(path)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    # second run: both networks come from the cache, bit for bit the same samples
    again = run_li_jiao_digits(config, out_dir=tmp_path / "out2", progress=False)
    assert again.training["denoiser"]["cached"] and again.training["classifier"]["cached"]
    key = ("network", "classifier", 1.0)
    assert torch.equal(again.samples[key], result.samples[key])


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="^strengths"):
        DigitsConfig(strengths=(0.5, 1.0)).validate()
    with pytest.raises(ValueError, match="^trials"):
        DigitsConfig(trials=0).validate()
    with pytest.raises(ValueError, match="^steps"):
        DigitsConfig(steps=4).validate()  # the li_jiao schedule needs 4 log T / T < 1
    with pytest.raises(ValueError, match="^guidance"):
        DigitsConfig(guidance=("cfg", "other")).validate()


def test_command_line_runs_and_reports_bad_options(tmp_path):
    from typer.testing import CliRunner

    from guidelab.cli import app

    runner = CliRunner()
    out = tmp_path / "out"
    args = ["reproduce", "li-jiao-digits", "--out", str(out), "--trials", "3", "--w", "1",
            "--steps", "10", "--denoiser-steps", "2", "--classifier-steps", "2",
            "--models", "network", "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "network  classifier     1" in result.output
    for name in ("results.csv", "calibration.json", "q_vs_w.png", "samples.png",
                 "reliability.png"):
        assert (out / name).exists()
    bad = runner.invoke(app, [*args[:-1], "--trials", "0"])
    assert bad.exit_code == 2 and "trials" in bad.output
