"""Tests of guidelab.metrics.calibration (reliability tables, ECE, calibration_summary).

References: sklearn.calibration.calibration_curve (per-bin frequency and mean prediction),
bin counts from numpy.histogram on the negated predictions (its half-open bins [a, b) then
match (k/B, (k+1)/B]), sklearn.metrics.log_loss and accuracy_score, and the sampling error of
the ECE of a perfectly calibrated judge, sum_k (n_k/N) |mean of n_k centred Bernoulli draws|,
bounded with E|X| <= sqrt(E X^2).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.calibration import calibration_curve
from sklearn.metrics import accuracy_score, log_loss

from guidelab.metrics.calibration import (
    calibration_summary,
    expected_calibration_error,
    reliability_bins,
)


def judge(n: int, classes: int, seed: int, temperature: float = 1.0):
    """([n, C] probabilities, [n] labels): softmax of Gaussian logits; labels drawn from the
    probabilities at temperature 1 (a perfectly calibrated judge when ``temperature`` = 1)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.0, size=(n, classes))  # [n, C]
    true = np.exp(logits - logits.max(axis=1, keepdims=True))
    true /= true.sum(axis=1, keepdims=True)  # [n, C]
    labels = (rng.uniform(size=(n, 1)) > np.cumsum(true, axis=1)).sum(axis=1)  # [n]
    labels = np.minimum(labels, classes - 1)
    shown = np.exp(logits / temperature - (logits / temperature).max(axis=1, keepdims=True))
    return shown / shown.sum(axis=1, keepdims=True), labels


def counts_by_histogram(predicted: np.ndarray, bins: int) -> np.ndarray:
    """[B] counts of (k/B, (k+1)/B] (first closed): numpy's [a, b) bins on -predicted."""
    counts, _ = np.histogram(-predicted, bins=np.linspace(-1.0, 0.0, bins + 1))
    return counts[::-1]


def ece_by_sklearn(predicted: np.ndarray, outcome: np.ndarray, bins: int) -> float:
    frequency, mean = calibration_curve(outcome, predicted, n_bins=bins, strategy="uniform")
    counts = counts_by_histogram(predicted, bins)
    return float(np.sum(counts[counts > 0] * np.abs(frequency - mean)) / predicted.shape[0])


@pytest.mark.parametrize("bins", [5, 10, 15])
def test_ece_matches_sklearn_calibration_curve(bins):
    probabilities, labels = judge(3000, 4, seed=0, temperature=0.6)
    top = probabilities.max(axis=1)  # [N]
    correct = (probabilities.argmax(axis=1) == labels).astype(float)  # [N]
    assert expected_calibration_error(probabilities, labels, bins=bins) == pytest.approx(
        ece_by_sklearn(top, correct, bins), rel=1e-12, abs=1e-15)
    classwise = np.mean([ece_by_sklearn(probabilities[:, c], (labels == c).astype(float), bins)
                         for c in range(4)])
    assert expected_calibration_error(probabilities, labels, bins=bins, kind="classwise") \
        == pytest.approx(classwise, rel=1e-12, abs=1e-15)


def test_reliability_bins_match_sklearn_and_leave_empty_bins_nan():
    probabilities, labels = judge(2000, 3, seed=1)
    table = reliability_bins(probabilities, labels, bins=20, kind="classwise")
    predicted, outcome = probabilities.ravel(), np.eye(3)[labels].ravel()  # [N C] each
    counts = counts_by_histogram(predicted, 20)
    np.testing.assert_array_equal(table["count"], counts)
    frequency, mean = calibration_curve(outcome, predicted, n_bins=20, strategy="uniform")
    used = counts > 0
    np.testing.assert_allclose(table["frequency"][used], frequency, rtol=1e-12)
    np.testing.assert_allclose(table["confidence"][used], mean, rtol=1e-12)
    top = reliability_bins(probabilities, labels, bins=20, kind="top")
    assert np.isnan(top["confidence"][:5]).all()  # max of 3 probabilities is >= 1/3
    assert top["count"].sum() == 2000


def test_bin_edges_are_right_closed_and_zero_goes_to_the_first_bin():
    probabilities = np.array([[0.0, 1.0], [0.5, 0.5], [0.2, 0.8], [0.6, 0.4]])
    table = reliability_bins(probabilities, np.array([1, 0, 1, 0]), bins=5, kind="classwise")
    # values 0, 1, .5, .5, .2, .8, .6, .4 -> bins (0, .2] holds 0 and .2; (.4, .6] holds .5 .5 .6
    np.testing.assert_array_equal(table["count"], [2, 1, 3, 1, 1])


def binary_ece_bound(predicted: np.ndarray, bins: int = 10, sds: float = 5.0) -> float:
    """Upper bound on the binary ECE of calibrated predictions [N] (outcomes ~ Bernoulli(p)):
    in bin k the gap is the mean of n_k centred Bernoulli draws of variance v_k (the mean of
    p(1 - p) there), so E[ECE] <= sum_k sqrt(n_k v_k) / N (E|X| <= sqrt(E X^2)) and
    sd(ECE) <= sqrt(sum_k n_k v_k) / N; the bound is mean + ``sds`` sd."""
    index = np.clip(np.ceil(predicted * bins).astype(int) - 1, 0, bins - 1)  # [N]
    spread = np.bincount(index, predicted * (1 - predicted), minlength=bins)  # [B]: n_k v_k
    return float(np.sqrt(spread).sum() + sds * math.sqrt(spread.sum())) / predicted.shape[0]


def test_a_calibrated_judge_has_ece_within_its_sampling_error():
    """Labels drawn from the shown probabilities: the top label is right with probability
    max_c p and 1{label = c} ~ Bernoulli(p(c|y)), so both ECEs lie below their sampling bound
    (the classwise one is the mean of C binary ECEs). A sharpened judge (temperature 0.5) must
    exceed it."""
    probabilities, labels = judge(20_000, 4, seed=2)
    top_bound = binary_ece_bound(probabilities.max(axis=1))
    classwise_bound = np.mean([binary_ece_bound(probabilities[:, c]) for c in range(4)])
    assert expected_calibration_error(probabilities, labels, kind="top") <= top_bound
    assert expected_calibration_error(probabilities, labels, kind="classwise") \
        <= classwise_bound
    sharp, labels = judge(20_000, 4, seed=2, temperature=0.5)
    assert expected_calibration_error(sharp, labels, kind="top") > 2 * top_bound
    assert expected_calibration_error(sharp, labels, kind="classwise") > 2 * classwise_bound


def test_calibration_summary_against_sklearn_and_strict_json():
    probabilities, labels = judge(500, 5, seed=3, temperature=0.8)
    log_p = np.log(probabilities)  # [N, C]
    summary = calibration_summary(torch.from_numpy(log_p), torch.from_numpy(labels), bins=40)
    assert summary == calibration_summary(log_p, labels, bins=40)  # torch and numpy agree
    text = json.dumps(summary, allow_nan=False)
    assert "null" in text  # 40 bins over 500 top confidences leave empty ones
    assert summary["n"] == 500 and summary["bins"] == 40
    assert summary["accuracy"] == pytest.approx(
        accuracy_score(labels, probabilities.argmax(axis=1)), rel=1e-15)
    assert summary["log_loss"] == pytest.approx(log_loss(labels, probabilities,
                                                         labels=range(5)), rel=1e-10)
    assert summary["ece_top"] == expected_calibration_error(probabilities, labels, bins=40)
    table = summary["reliability_classwise"]
    assert sum(table["count"]) == 500 * 5 and len(table["confidence"]) == 40
    assert all(isinstance(count, int) for count in table["count"])


def test_zero_probability_of_the_label_gives_a_null_log_loss():
    with np.errstate(divide="ignore"):
        log_p = np.log(np.array([[1.0, 0.0], [0.5, 0.5]]))  # a -inf entry
        summary = calibration_summary(log_p, np.array([1, 0]), bins=2)
    assert summary["log_loss"] is None
    json.dumps(summary, allow_nan=False)


def test_bad_inputs_name_the_parameter():
    probabilities, labels = judge(10, 3, seed=4)
    with pytest.raises(ValueError, match="^probabilities: "):
        expected_calibration_error(probabilities[:, :, None], labels)
    with pytest.raises(ValueError, match="^probabilities: "):
        reliability_bins(probabilities * 2, labels)
    with pytest.raises(ValueError, match="^labels: "):
        reliability_bins(probabilities, labels[:5])
    with pytest.raises(ValueError, match="^labels: "):
        expected_calibration_error(probabilities, labels + 3)
    with pytest.raises(ValueError, match="^bins: "):
        expected_calibration_error(probabilities, labels, bins=0)
    with pytest.raises(ValueError, match="^kind: "):
        reliability_bins(probabilities, labels, kind="other")
    with pytest.raises(ValueError, match="^kind: "):
        expected_calibration_error(probabilities, labels, kind="other")
    with pytest.raises(ValueError, match="^log_probabilities: "):
        calibration_summary(np.log(probabilities) + 1.0, labels)  # logits, not log-probabilities
    with pytest.raises(ValueError, match="^log_probabilities: "):
        calibration_summary(np.full((3, 2), np.nan), np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="^labels: "):
        calibration_summary(np.log(probabilities), labels.astype(float))
