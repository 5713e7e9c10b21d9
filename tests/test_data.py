"""guidelab.data: sources, files, the stratified split and the fingerprints.

Facts are computed another way: the digits against scikit-learn's arrays, fingerprints by
hashing the documented bytes directly, split counts by counting labels, family moments against
closed-form class means, Swiss-roll labels from the parameter t recovered from the radius.
"""

import hashlib
import json
import math
import pickle
import sys

import numpy as np
import pytest
import torch

from guidelab.data import (
    DATA_SOURCES,
    LabelledData,
    data_source,
    digits,
    exact_weights,
    family_draws,
    fingerprint,
    largest_remainder,
    load_file,
    register_data_source,
    split,
    split_fingerprint,
    swiss_roll,
)
from guidelab.distributions import GaussianMixture, UniformBoxMixture

pytestmark = pytest.mark.usefixtures("one_thread")


def reference_fingerprint(x: np.ndarray, labels: np.ndarray, num_classes: int) -> str:
    """The documented bytes, hashed here independently of guidelab.data.core."""
    header = (f'{{"format":"guidelab.data/1","n":{x.shape[0]},"num_classes":{num_classes},'
              f'"shape":[{",".join(str(s) for s in x.shape[1:])}]}}\n')
    digest = hashlib.sha256(header.encode())
    digest.update(np.asarray(x, dtype=np.float32).astype("<f4").tobytes())
    digest.update(np.asarray(labels).astype("<i8").tobytes())
    return digest.hexdigest()


def uneven_data(seed: int = 3) -> LabelledData:
    """Five classes of uneven sizes; row i has x[i, 0] = i so rows can be identified."""
    sizes = [37, 50, 3, 101, 12]
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(5), sizes))
    x = np.stack([np.arange(labels.size, dtype=np.float64), rng.normal(size=labels.size)], 1)
    return LabelledData(torch.from_numpy(x), torch.from_numpy(labels), 5, "uneven")


# ----------------------------------------------------------------------------- digits


def test_digits_scaling_matches_sklearn():
    datasets = pytest.importorskip("sklearn.datasets")
    bunch = datasets.load_digits()
    v = bunch.data  # [1797, 64] in 0..16
    data = digits()
    assert data.x.shape == (1797, 64) and data.shape == (64,) and data.num_classes == 10
    assert data.x.dtype == torch.float32 and data.name == "digits"
    x = data.x.double().numpy()
    np.testing.assert_array_equal(x, (v - 8.0) / 8.0)
    assert ((x == -1.0) == (v == 0)).all() and ((x == 1.0) == (v == 16)).all()
    assert x.min() == -1.0 and x.max() == 1.0
    np.testing.assert_array_equal(data.labels.numpy(), bunch.target)
    assert data.labels.dtype == torch.int64
    np.testing.assert_array_equal(digits("unit").x.numpy(), (v / 16.0).astype(np.float32))
    np.testing.assert_array_equal(digits("raw", dtype=torch.float64).x.numpy(), v)
    image = digits(image=True)
    assert image.shape == (1, 8, 8)
    np.testing.assert_array_equal(image.x[:, 0].double().numpy(), bunch.images / 8.0 - 1.0)
    assert image.fingerprint != data.fingerprint  # same values, different shape
    with pytest.raises(ValueError, match="^scale: "):
        digits("centred")


def test_digits_without_sklearn_names_setup(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ValueError, match=r"bash scripts/setup\.sh digits") as error:
        digits()
    assert "\n" not in str(error.value)


# ----------------------------------------------------------------------------- fingerprint


def test_fingerprint_is_the_documented_hash():
    data = uneven_data()
    x, labels = data.x.numpy(), data.labels.numpy()
    assert data.fingerprint == reference_fingerprint(x, labels, 5)
    assert fingerprint(x[:10], labels[:10], 5) == reference_fingerprint(x[:10], labels[:10], 5)
    as_float32 = LabelledData(data.x.float(), data.labels, 5, "other name")
    assert as_float32.fingerprint == data.fingerprint  # dtype and name do not enter
    changed_x = x.copy()
    changed_x[17, 1] += 0.5
    changed_labels = labels.copy()
    changed_labels[17] = (changed_labels[17] + 1) % 5
    others = {fingerprint(changed_x, labels, 5), fingerprint(x, changed_labels, 5),
              fingerprint(x, labels, 6), fingerprint(x.reshape(-1, 2, 1), labels, 5)}
    assert len(others) == 4 and data.fingerprint not in others


def test_labelled_data_rejects_bad_input():
    x = torch.zeros(4, 2)
    labels = torch.tensor([0, 1, 1, 0])
    with pytest.raises(ValueError, match="^x: "):
        LabelledData(torch.tensor([[0.0, float("nan")]] * 4), labels, 2, "d")
    with pytest.raises(ValueError, match="^x: "):
        LabelledData(torch.zeros(4, 2, dtype=torch.int64), labels, 2, "d")
    with pytest.raises(ValueError, match="^labels: "):
        LabelledData(x, torch.tensor([0, 1, 2, 0]), 2, "d")
    with pytest.raises(ValueError, match="^labels: "):
        LabelledData(x, labels[:3], 2, "d")
    with pytest.raises(ValueError, match="^shape: "):
        LabelledData(x, labels, 2, "d", shape=(1, 2))
    with pytest.raises(ValueError, match="^name: "):
        LabelledData(x, labels, 2, "")


# ----------------------------------------------------------------------------- split


def test_split_is_stratified_disjoint_and_covering():
    data = uneven_data()
    fractions = {"train": 0.5, "judge": 0.3, "test": 0.2}
    parts = split(data, fractions, seed=7)
    assert list(parts) == ["train", "judge", "test"]
    labels = data.labels.numpy()
    class_sizes = np.bincount(labels, minlength=5)
    rows = {}
    for name, part in parts.items():
        assert part.name == f"uneven/{name}" and part.num_classes == 5
        ids = part.x[:, 0].numpy().astype(np.int64)  # x[i, 0] = i identifies the row
        np.testing.assert_array_equal(ids, parts.indices[name])
        np.testing.assert_array_equal(part.labels.numpy(), labels[ids])
        np.testing.assert_array_equal(part.x.numpy(), data.x.numpy()[ids])
        counts = np.bincount(labels[ids], minlength=5)
        assert (np.abs(counts - class_sizes * fractions[name]) < 1).all()
        assert part.fingerprint == reference_fingerprint(data.x.numpy()[ids], labels[ids], 5)
        rows[name] = set(ids.tolist())
    assert not rows["train"] & rows["judge"] and not rows["train"] & rows["test"]
    assert not rows["judge"] & rows["test"]
    assert set().union(*rows.values()) == set(range(len(data)))
    assert sum(len(p) for p in parts.values()) == len(data)


def test_split_is_deterministic_and_keyed():
    data = uneven_data()
    fractions = {"a": 0.6, "b": 0.4}
    first, again = split(data, fractions, 1), split(data, fractions, 1)
    reordered = split(data, {"b": 0.4, "a": 0.6}, 1)
    other_seed = split(data, fractions, 2)
    for name in fractions:
        np.testing.assert_array_equal(first.indices[name], again.indices[name])
        np.testing.assert_array_equal(first.indices[name], reordered.indices[name])
        assert first[name].fingerprint == again[name].fingerprint
    assert first.fingerprint == again.fingerprint == reordered.fingerprint
    assert first.fingerprint == split_fingerprint(data, fractions, 1)
    assert not np.array_equal(first.indices["a"], other_seed.indices["a"])
    assert other_seed.fingerprint != first.fingerprint
    x = data.x.clone()
    x[5, 1] += 1e-3  # one value changed
    changed = LabelledData(x, data.labels, 5, data.name)
    assert split(data.subset(np.arange(len(data))), fractions, 1).fingerprint == first.fingerprint
    assert split_fingerprint(changed, fractions, 1) != first.fingerprint
    assert split_fingerprint(data, {"a": 0.5, "b": 0.5}, 1) != first.fingerprint
    assert split_fingerprint(data, {"a": 0.6, "c": 0.4}, 1) != first.fingerprint
    json.dumps(first.fractions)  # plain floats


def test_split_balances_ties_across_classes():
    labels = torch.arange(9).repeat_interleave(10)  # nine classes of ten rows
    data = LabelledData(torch.randn(90, 2, generator=torch.Generator().manual_seed(0)), labels,
                        9, "ties")
    parts = split(data, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, 4)
    # each class gives 3 + 3 + 3 and one row left over; over nine classes each part gets three
    assert [len(p) for p in parts.values()] == [30, 30, 30]
    for part in parts.values():
        assert set(part.class_counts().tolist()) <= {3, 4}
    restored = pickle.loads(pickle.dumps(parts))
    assert restored.fingerprint == parts.fingerprint
    assert restored["a"].fingerprint == parts["a"].fingerprint


def test_largest_remainder_counts():
    assert exact_weights([0.5, 0.25, 0.25]) == [2, 1, 1]
    assert largest_remainder(11, exact_weights([0.3, 0.7])) == [3, 8]
    assert largest_remainder(7, [1, 1, 1]) == [3, 2, 2]
    assert largest_remainder(7, [1, 1, 1], priority=[0, 0, 1]) == [3, 2, 2][::-1]
    rng = np.random.default_rng(0)
    for _ in range(50):
        shares = rng.dirichlet(np.ones(4))
        total = int(rng.integers(0, 500))
        counts = np.array(largest_remainder(total, exact_weights(shares)))
        quotas = total * shares / shares.sum()
        assert counts.sum() == total and (np.abs(counts - quotas) < 1 + 1e-9).all()


def test_split_rejects_bad_parts():
    data = uneven_data()
    for parts in ({"a": 0.5, "b": 0.4}, {"a": 1.2, "b": -0.2}, {}, {"a": 0.5, "": 0.5},
                  {"a": True}):
        with pytest.raises(ValueError, match="^parts: "):
            split(data, parts, 0)
    with pytest.raises(ValueError, match="^parts: "):  # 203 rows cannot fill 1000 parts
        split(data, {f"p{k}": 0.001 for k in range(1000)}, 0)
    with pytest.raises(ValueError, match="^seed: "):
        split(data, {"a": 1.0}, -1)
    with pytest.raises(ValueError, match="^data: "):
        split(data.x, {"a": 1.0}, 0)


# ----------------------------------------------------------------------------- family draws


def test_family_draws_class_means():
    means = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, 3.0]], dtype=torch.float64)
    variances = torch.tensor([0.5, 1.0, 0.25], dtype=torch.float64)
    weights = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    component_labels = torch.tensor([0, 0, 1])
    family = GaussianMixture(means, variances, weights, component_labels)
    n = 4000
    data = family_draws(family, n, seed=11)
    assert data.x.shape == (2 * n, 2) and data.num_classes == 2
    np.testing.assert_array_equal(data.class_counts().numpy(), [n, n])
    for c in range(2):
        members = component_labels == c
        w = weights[members] / weights[members].sum()
        mean = (w[:, None] * means[members]).sum(0)  # [2]
        second = (w[:, None] * (means[members] ** 2 + variances[members][:, None])).sum(0)
        se = torch.sqrt((second - mean**2) / n)
        sample_mean = data.x[data.labels == c].double().mean(0)
        assert ((sample_mean - mean).abs() < 4.5 * se).all(), (c, sample_mean, mean, se)
    again = family_draws(family, n, seed=11)
    assert again.fingerprint == data.fingerprint
    assert family_draws(family, n, seed=12).fingerprint != data.fingerprint


def test_family_draws_total_by_prior_and_boxes():
    family = UniformBoxMixture([[0.0, 0.0], [5.0, 5.0]], [[1.0, 1.0], [6.0, 7.0]],
                               [0.3, 0.7], [0, 1])
    data = family_draws(family, n=11, seed=0, dtype=torch.float64)
    # 11 * (0.3, 0.7) = (3.3, 7.7): floors (3, 7), the one left over to the larger remainder
    np.testing.assert_array_equal(data.class_counts().numpy(), [3, 8])
    assert data.x.dtype == torch.float64
    inside_0 = ((data.x >= 0) & (data.x <= 1)).all(1)
    inside_1 = ((data.x >= 5) & (data.x <= torch.tensor([6.0, 7.0], dtype=torch.float64))).all(1)
    assert torch.equal(inside_0, data.labels == 0) and torch.equal(inside_1, data.labels == 1)
    uneven = family_draws(family, [2, 0], seed=0)
    np.testing.assert_array_equal(uneven.labels.numpy(), [0, 0])
    with pytest.raises(ValueError, match="^n_per_class: "):
        family_draws(family, 5, n=5)
    with pytest.raises(ValueError, match="^n_per_class: "):
        family_draws(family, [1, 2, 3])
    with pytest.raises(ValueError, match="^distribution: "):
        family_draws(object(), 5)


# ----------------------------------------------------------------------------- swiss roll


def test_swiss_roll_labels_follow_t():
    scale = 2.0
    data = swiss_roll(3000, seed=5, noise=0.0, classes=3, scale=scale, dtype=torch.float64)
    x = data.x.numpy()
    t = np.hypot(x[:, 0], x[:, 1]) * scale  # the radius is t / scale
    assert t.min() >= 1.5 * math.pi - 1e-9 and t.max() <= 4.5 * math.pi + 1e-9
    np.testing.assert_allclose(x * scale / t[:, None], np.stack([np.cos(t), np.sin(t)], 1),
                               atol=1e-9)
    edges = 1.5 * math.pi + math.pi * np.arange(4)  # three ranges of length pi
    expected = np.searchsorted(edges[1:-1], t, side="right")
    clear = np.abs(t[:, None] - edges[None, 1:-1]).min(1) > 1e-9
    np.testing.assert_array_equal(data.labels.numpy()[clear], expected[clear])
    assert set(np.unique(data.labels.numpy())) == {0, 1, 2}
    noisy = swiss_roll(200, 5)
    assert noisy.shape == (2,) and noisy.num_classes == 2 and noisy.x.dtype == torch.float32
    assert noisy.fingerprint == swiss_roll(200, 5).fingerprint
    assert noisy.fingerprint != swiss_roll(200, 6).fingerprint
    for kwargs, parameter in (({"n": 0}, "n"), ({"n": 5, "classes": 0}, "classes"),
                              ({"n": 5, "noise": -1.0}, "noise"), ({"n": 5, "seed": -2}, "seed")):
        with pytest.raises(ValueError, match=f"^{parameter}: "):
            swiss_roll(**kwargs)


# ----------------------------------------------------------------------------- files


def small_arrays(seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(7, 3)), rng.integers(0, 4, size=7)


def test_npz_pt_parquet_round_trip(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    x, labels = small_arrays()
    np.savez(tmp_path / "d.npz", x=x, labels=labels)
    torch.save({"images": torch.from_numpy(x).float(), "y": torch.from_numpy(labels)},
               tmp_path / "d.pt")
    pq.write_table(pa.table({"labels": labels, "x": [row.tolist() for row in x]}),
                   tmp_path / "lists.parquet")
    pq.write_table(pa.table({"labels": labels, **{f"x{i}": x[:, i] for i in (2, 0, 1)}}),
                   tmp_path / "columns.parquet")
    npz = load_file(tmp_path / "d.npz")
    assert npz.name == "d" and npz.x.dtype == torch.float64 and npz.num_classes == labels.max() + 1
    np.testing.assert_array_equal(npz.x.numpy(), x)
    np.testing.assert_array_equal(npz.labels.numpy(), labels)
    pt = load_file(tmp_path / "d.pt", x_key="images", label_key="y", num_classes=6)
    assert pt.x.dtype == torch.float32 and pt.num_classes == 6
    np.testing.assert_array_equal(pt.x.numpy(), x.astype(np.float32))
    np.testing.assert_array_equal(pt.labels.numpy(), labels)
    for file in ("lists.parquet", "columns.parquet"):
        table = load_file(tmp_path / file)
        np.testing.assert_array_equal(table.x.numpy(), x)
        np.testing.assert_array_equal(table.labels.numpy(), labels)
        assert table.fingerprint == npz.fingerprint
    nested = np.arange(24.0).reshape(2, 3, 4)
    pq.write_table(pa.table({"labels": [0, 1], "x": nested.tolist()}), tmp_path / "n.parquet")
    np.testing.assert_array_equal(load_file(tmp_path / "n.parquet").x.numpy(), nested)


def test_image_folder_of_npy(tmp_path):
    rng = np.random.default_rng(1)
    stored = {}
    for class_name, count in (("dog", 2), ("cat", 3)):  # read back in order cat, dog
        (tmp_path / "pets" / class_name).mkdir(parents=True)
        for k in range(count):
            image = rng.normal(size=(1, 4, 4)).astype(np.float32)
            np.save(tmp_path / "pets" / class_name / f"{k:02d}.npy", image)
            stored[(class_name, k)] = image
    (tmp_path / "pets" / "README.txt").write_text("ignored: files in the root")
    data = load_file(tmp_path / "pets")
    assert data.class_names == ("cat", "dog") and data.name == "pets" and data.shape == (1, 4, 4)
    np.testing.assert_array_equal(data.labels.numpy(), [0, 0, 0, 1, 1])
    expected = [stored[("cat", k)] for k in range(3)] + [stored[("dog", k)] for k in range(2)]
    np.testing.assert_array_equal(data.x.numpy(), np.stack(expected))


def test_image_folder_of_png(tmp_path, monkeypatch):
    (tmp_path / "root" / "a").mkdir(parents=True)
    (tmp_path / "root" / "b").mkdir()
    pixels = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    try:
        from PIL import Image
    except ImportError:
        Image = None
    if Image is not None:
        Image.fromarray(pixels).save(tmp_path / "root" / "a" / "0.png")
        Image.fromarray(np.stack([pixels] * 3, axis=2)).save(tmp_path / "root" / "b" / "0.png")
        (tmp_path / "rgb" / "only").mkdir(parents=True)
        Image.fromarray(np.stack([pixels, pixels + 1, pixels + 2], 2)).save(
            tmp_path / "rgb" / "only" / "0.png")
        rgb = load_file(tmp_path / "rgb")
        np.testing.assert_array_equal(rgb.x.numpy()[0], np.stack([pixels, pixels + 1,
                                                                  pixels + 2]))
        with pytest.raises(ValueError, match=r"^path: .*0\.png: expected a sample of shape"):
            load_file(tmp_path / "root")  # gray (1, 3, 4) then RGB (3, 3, 4)
        (tmp_path / "root" / "b" / "0.png").unlink()
        Image.fromarray(pixels[::-1].copy()).save(tmp_path / "root" / "b" / "0.png")
        gray = load_file(tmp_path / "root")
        assert gray.shape == (1, 3, 4) and gray.x.dtype == torch.float32
        np.testing.assert_array_equal(gray.x.numpy()[:, 0], np.stack([pixels, pixels[::-1]]))
    else:
        (tmp_path / "root" / "a" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    monkeypatch.setitem(sys.modules, "PIL", None)
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    with pytest.raises(ValueError, match=r"^path: .*0\.png: decoding PNG needs Pillow") as error:
        load_file(tmp_path / "root")
    assert "\n" not in str(error.value)


def test_bad_files_name_the_path(tmp_path):
    x, labels = small_arrays()
    bad_x = x.copy()
    bad_x[2, 1] = np.nan
    cases = {
        "nan.npz": ({"x": bad_x, "labels": labels}, "NaN"),
        "short.npz": ({"x": x, "labels": labels[:5]}, "mismatched lengths"),
        "missing.npz": ({"x": x, "y": labels}, "missing key 'labels'"),
        "fraction.npz": ({"x": x, "labels": labels + 0.5}, "non-integer labels"),
    }
    for file, (arrays, message) in cases.items():
        np.savez(tmp_path / file, **arrays)
        with pytest.raises(ValueError, match=f"^path: .*{file}: .*{message}"):
            load_file(tmp_path / file)
    torch.save({"x": torch.from_numpy(x)}, tmp_path / "nolabels.pt")
    with pytest.raises(ValueError, match="^path: .*nolabels.pt: missing key 'labels'"):
        load_file(tmp_path / "nolabels.pt")
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="^path: .*list.pt: expected a dict of tensors"):
        load_file(tmp_path / "list.pt")
    (tmp_path / "d.csv").write_text("x,labels\n1,0\n")
    with pytest.raises(ValueError, match=r"^path: .*d\.csv: unknown extension '\.csv'"):
        load_file(tmp_path / "d.csv")
    with pytest.raises(ValueError, match="^path: .*absent.npz: no such file"):
        load_file(tmp_path / "absent.npz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="^path: .*empty: empty folder"):
        load_file(tmp_path / "empty")
    (tmp_path / "empty" / "a").mkdir()
    with pytest.raises(ValueError, match="^path: .*a: empty folder"):
        load_file(tmp_path / "empty")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"labels": labels, "z0": x[:, 0]}), tmp_path / "cols.parquet")
    with pytest.raises(ValueError, match="^path: .*cols.parquet: expected a list column 'x'"):
        load_file(tmp_path / "cols.parquet")


# ----------------------------------------------------------------------------- registry


def test_registry():
    assert {"digits", "family_draws", "swiss_roll", "file"} <= set(DATA_SOURCES)
    assert DATA_SOURCES["swiss_roll"] is swiss_roll and data_source("file") is load_file
    with pytest.raises(ValueError, match="^name: "):
        register_data_source("swiss_roll", lambda: None)
    with pytest.raises(ValueError, match="^source: "):
        data_source("no-such-source")

    def tiny(seed: int = 0) -> LabelledData:
        return swiss_roll(10, seed)

    try:
        register_data_source("tiny", tiny)
        assert data_source("tiny")(seed=1).fingerprint == swiss_roll(10, 1).fingerprint
        register_data_source("tiny", swiss_roll, replace=True)
        assert DATA_SOURCES["tiny"] is swiss_roll
    finally:
        DATA_SOURCES.pop("tiny", None)
