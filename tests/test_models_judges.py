"""Judges: a logistic judge against scikit-learn, network judges against manual preprocessing,
safe files, torchvision loading (real when importable, else a stand-in package), factories."""

import json
import math
import struct
import sys
import textwrap

import numpy as np
import pytest
import torch
from scipy.special import log_expit, log_softmax
from torch import nn

from guidelab.models import (
    LogisticJudge,
    NetworkJudge,
    fit_logistic_judge,
    from_torchvision,
    judge_from_factory,
    load_python_object,
)
from guidelab.models.judges import IMAGENET_MEAN, IMAGENET_STD

pytestmark = pytest.mark.usefixtures("one_thread")

GRID = (0.1, 1.0, 10.0)


def _blobs(n_per_class=40, dim=4, classes=3, seed=0):
    """Overlapping Gaussian classes: a problem whose best temperature is not 1."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=1.2, size=(classes, dim))
    x = np.concatenate([centres[c] + rng.normal(size=(n_per_class, dim))
                        for c in range(classes)])  # [n, D]
    labels = np.repeat(np.arange(classes), n_per_class)  # [n]
    return x, labels


@pytest.fixture(scope="module")
def fitted():
    x, labels = _blobs()
    return x, labels, fit_logistic_judge(x, labels, inverse_regularisation=GRID, seed=0)


def _brute_force_temperature(logits, labels):
    """(log T, NLL) minimising the out-of-fold NLL over a grid of log T with step 1e-3."""
    log_ts = np.linspace(-4.0, 4.0, 8001)
    rows = np.arange(labels.shape[0])
    nll = np.array([-log_softmax(logits / math.exp(t), axis=1)[rows, labels].mean()
                    for t in log_ts])
    best = int(np.argmin(nll))
    return log_ts[best], nll[best]


# ----------------------------------------------------------------------------- LogisticJudge


def test_fit_matches_an_independent_cross_validation(fitted):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    x, labels, judge = fitted
    splitter = StratifiedKFold(5, shuffle=True, random_state=0)
    reference = []
    for c_value in GRID:
        oof = cross_val_predict(LogisticRegression(C=c_value, max_iter=5000), x, labels,
                                cv=splitter, method="decision_function")  # [n, 3]
        log_t, nll = _brute_force_temperature(oof, labels)
        reference.append((c_value, log_t, nll))
    assert [entry[0] for entry in judge.grid] == list(GRID)
    for (_, t_fit, nll_fit), (_, log_t, nll) in zip(judge.grid, reference, strict=True):
        assert abs(math.log(t_fit) - log_t) < 2e-3  # the grid's step is 1e-3
        assert nll_fit <= nll + 1e-9 and nll_fit == pytest.approx(nll, abs=1e-6)
    best = min(reference, key=lambda entry: entry[2])
    assert judge.inverse_regularisation == best[0]
    assert judge.cv_log_loss == pytest.approx(best[2], abs=1e-6)
    assert abs(math.log(judge.temperature) - best[1]) < 2e-3
    assert abs(math.log(judge.temperature) - 0.0) > 0.05  # temperature scaling did something

    refit = LogisticRegression(C=judge.inverse_regularisation, max_iter=5000).fit(x, labels)
    expected = log_softmax(refit.decision_function(x) / judge.temperature, axis=1)  # [n, 3]
    got = judge.log_class_posterior(torch.from_numpy(x))
    assert got.dtype == torch.float64 and got.shape == (x.shape[0], 3)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-10)


def test_binary_judge_is_the_sigmoid_of_the_scaled_logit():
    from sklearn.linear_model import LogisticRegression

    x, labels = _blobs(n_per_class=30, dim=3, classes=2, seed=1)
    judge = fit_logistic_judge(x, labels, inverse_regularisation=(1.0,), folds=3, seed=2)
    assert judge.num_classes == 2 and judge.weight.shape == (2, 3)
    z = LogisticRegression(C=1.0, max_iter=5000).fit(x, labels).decision_function(x)  # [n]
    z = z / judge.temperature
    expected = np.stack([log_expit(-z), log_expit(z)], axis=1)  # [n, 2]
    np.testing.assert_allclose(judge.log_class_posterior(x).numpy(), expected, rtol=0,
                               atol=1e-10)


def test_logistic_judge_rows_dtypes_and_errors(fitted):
    x, _, judge = fitted
    images = torch.from_numpy(x[:6]).reshape(6, 1, 2, 2)  # any [N, ...] with D = 4 values
    full = judge.log_class_posterior(images)
    assert torch.allclose(full.exp().sum(1), torch.ones(6, dtype=torch.float64), atol=1e-12)
    # float32 input: float64 output of the float32 values
    single = judge.log_class_posterior(images.float())
    assert single.dtype == torch.float64
    assert torch.equal(single, judge.log_class_posterior(images.float().double()))
    # rows with NaN or infinity: NaN rows, the others unchanged
    broken = images.clone()
    broken[1, 0, 0, 1] = float("nan")
    broken[4, 0, 1, 0] = float("inf")
    out = judge.log_class_posterior(broken)
    assert torch.isnan(out[[1, 4]]).all()
    keep = [0, 2, 3, 5]
    assert torch.equal(out[keep], full[keep])
    # float32 judge on float32 input: float32 out
    assert judge.to(dtype=torch.float32).log_class_posterior(images.float()).dtype == \
        torch.float32
    with pytest.raises(ValueError, match="^sigma: "):
        judge.log_class_posterior(images, 0.8, 0.6)
    with pytest.raises(ValueError, match="^x: expected .*4 values per row"):
        judge.log_class_posterior(torch.zeros(2, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="^x: "):
        judge.log_class_posterior(torch.zeros(2, 4, dtype=torch.int64))
    huge = LogisticJudge(torch.full((2, 1), 1e300, dtype=torch.float64),
                         torch.zeros(2, dtype=torch.float64), 1.0)
    with pytest.raises(FloatingPointError, match="^LogisticJudge: "):
        huge.log_class_posterior(torch.tensor([[1e300]], dtype=torch.float64))
    with pytest.raises(ValueError, match="^temperature: "):
        LogisticJudge(judge.weight, judge.bias, 0.0)
    with pytest.raises(ValueError, match="^weight: "):
        LogisticJudge(judge.weight[0], judge.bias, 1.0)
    with pytest.raises(ValueError, match="^bias: "):
        LogisticJudge(judge.weight, judge.bias[:2], 1.0)
    with pytest.raises(ValueError, match="^folds: "):
        fit_logistic_judge(x, np.arange(len(x)) % 3, folds=1)
    with pytest.raises(ValueError, match="^inverse_regularisation: "):
        fit_logistic_judge(x, np.arange(len(x)) % 3, inverse_regularisation=(1.0, -1.0))
    with pytest.raises(ValueError, match="^labels: "):
        fit_logistic_judge(x, np.zeros(len(x), dtype=np.int64))
    with pytest.raises(ValueError, match="^labels: class 2 has 1 rows"):
        fit_logistic_judge(x[:9], np.array([0, 0, 0, 0, 1, 1, 1, 1, 2]), folds=3)
    with pytest.raises(ValueError, match="^x: expected finite"):
        bad = x.copy()
        bad[0, 0] = np.nan
        fit_logistic_judge(bad, np.arange(len(x)) % 3)


def test_describe_and_fingerprint(fitted):
    _, _, judge = fitted
    assert "logistic regression" in judge.describe()
    assert f"C = {judge.inverse_regularisation:g}" in judge.describe()
    fingerprint = judge.fingerprint()
    assert len(fingerprint) == 64 and int(fingerprint, 16) >= 0
    assert judge.to(dtype=torch.float64).fingerprint() == fingerprint
    other = LogisticJudge(judge.weight, judge.bias, judge.temperature * (1 + 1e-15))
    assert other.fingerprint() != fingerprint


def test_save_load_is_bit_identical(fitted, tmp_path):
    x, _, judge = fitted
    path = judge.save(tmp_path / "judge.safetensors")
    loaded = LogisticJudge.load(path)
    assert torch.equal(loaded.weight, judge.weight) and loaded.weight.dtype == torch.float64
    assert torch.equal(loaded.bias, judge.bias)
    assert struct.pack("<d", loaded.temperature) == struct.pack("<d", judge.temperature)
    assert loaded.inverse_regularisation == judge.inverse_regularisation
    assert loaded.cv_log_loss == judge.cv_log_loss and loaded.grid == judge.grid
    assert loaded.fingerprint() == judge.fingerprint() == loaded.metadata["sha256"]
    header = loaded.metadata
    assert header["kind"] == "logistic" and header["classes"] == 3 and header["dim"] == 4
    inputs = torch.from_numpy(x)
    assert torch.equal(loaded.log_class_posterior(inputs), judge.log_class_posterior(inputs))


def test_load_rejects_bad_files(fitted, tmp_path):
    from safetensors.torch import save_file

    from guidelab.models import MLPDenoiser, save

    _, _, judge = fitted
    blob = judge.save(tmp_path / "good.safetensors").read_bytes()

    def write(name, data):
        path = tmp_path / name
        path.write_bytes(data)
        return path

    cases = {
        "truncated": write("truncated.safetensors", blob[:-7]),
        "short": write("short.safetensors", blob[:5]),
        "trailing": write("trailing.safetensors", blob + b"\0\0"),
        "edited": write("edited.safetensors", blob[:-1] + bytes([blob[-1] ^ 1])),
        "not json": write("garbage.safetensors", struct.pack("<Q", 4) + b"{{{{"),
    }
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(foreign))
    cases["foreign"] = foreign
    cases["model"] = save(MLPDenoiser(dim=2, num_classes=2, hidden=8, depth=1, seed=0),
                          tmp_path / "model.safetensors")
    for what, path in cases.items():
        with pytest.raises(ValueError, match=f"^path: {path}") as error:
            LogisticJudge.load(path)
        assert "\n" not in str(error.value), what
    with pytest.raises(FileNotFoundError, match="^path: "):
        LogisticJudge.load(tmp_path / "absent.safetensors")
    # a hand-written file with a [1] temperature and a consistent digest is accepted
    from guidelab.models.judges import _tensor_digest

    tensors = {"weight": judge.weight, "bias": judge.bias,
               "temperature": torch.tensor([judge.temperature], dtype=torch.float64)}
    header = judge.header() | {"sha256": _tensor_digest(tensors | {
        "temperature": tensors["temperature"].reshape(())})}
    save_file(tensors, str(tmp_path / "one.safetensors"),
              metadata={"guidelab": json.dumps(header)})
    assert LogisticJudge.load(tmp_path / "one.safetensors").temperature == judge.temperature


# ----------------------------------------------------------------------------- NetworkJudge


class TinyCNN(nn.Module):
    def __init__(self, in_channels=3, classes=3, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.head = nn.Linear(4, classes)
        self.double()

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def _bilinear(image, size):
    """Bilinear resize of ``[H, W]`` (half-pixel centres, edge clamped), PyTorch's
    align_corners=False rule written out in numpy."""
    def weights(n_in, n_out):
        matrix = np.zeros((n_out, n_in))
        for o in range(n_out):
            source = max((o + 0.5) * n_in / n_out - 0.5, 0.0)
            low = min(int(math.floor(source)), n_in - 1)
            high = min(low + 1, n_in - 1)
            fraction = source - low
            matrix[o, low] += 1 - fraction
            matrix[o, high] += fraction
        return matrix

    return weights(image.shape[0], size[0]) @ image @ weights(image.shape[1], size[1]).T


def _manual_preprocess(x, size, mean, std):
    """[N, 1, H, W] in [-1, 1] -> [N, 3, h, w], in numpy."""
    y = np.clip((x[:, 0] + 1) / 2, 0, 1)  # [N, H, W]
    y = np.stack([_bilinear(image, size) for image in y])  # [N, h, w]
    y = np.repeat(y[:, None], 3, axis=1)  # [N, 3, h, w]
    return (y - np.array(mean)[None, :, None, None]) / np.array(std)[None, :, None, None]


@pytest.mark.parametrize("size", [(12, 12), (5, 7)])
def test_network_judge_preprocessing_against_numpy(size):
    generator = torch.Generator().manual_seed(0)
    x = 1.2 * (2 * torch.rand(6, 1, 8, 8, generator=generator, dtype=torch.float64) - 1)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    network = TinyCNN()
    judge = NetworkJudge(network, resize=size, mean=mean, std=std, channels=3)
    expected = _manual_preprocess(x.numpy(), size, mean, std)
    got = judge.preprocess(x)
    assert got.shape == (6, 3, *size) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-12)
    with torch.no_grad():
        logits = network(torch.from_numpy(expected)).numpy()  # [6, 3]
    np.testing.assert_allclose(judge.log_class_posterior(x).numpy(),
                               log_softmax(logits, axis=1), rtol=0, atol=1e-12)


def test_network_judge_chunks_rows_and_dtypes():
    generator = torch.Generator().manual_seed(1)
    x = 2 * torch.rand(11, 3, 6, 6, generator=generator, dtype=torch.float64) - 1
    network = TinyCNN()
    whole = NetworkJudge(network, batch_size=None)
    chunked = NetworkJudge(network, batch_size=3)
    once = whole.log_class_posterior(x)
    assert once.shape == (11, 3) and once.dtype == torch.float64
    torch.testing.assert_close(chunked.log_class_posterior(x), once, rtol=0, atol=1e-13)
    assert whole.num_classes == 3  # the last nn.Linear
    # default input range (-1, 1) -> [0, 1], nothing else
    torch.testing.assert_close(whole.preprocess(x), (x + 1) / 2, rtol=0, atol=0)
    broken = x.clone()
    broken[2, 1, 0, 0] = float("nan")
    broken[7, 0, 3, 3] = -float("inf")
    out = chunked.log_class_posterior(broken)
    assert torch.isnan(out[[2, 7]]).all()
    keep = [i for i in range(11) if i not in (2, 7)]
    torch.testing.assert_close(out[keep], once[keep], rtol=0, atol=1e-13)
    # a float32 network: float32 out for float32 in, float64 for float64 in
    small = NetworkJudge(TinyCNN(), dtype=torch.float32)
    assert small.log_class_posterior(x.float()).dtype == torch.float32
    assert small.log_class_posterior(x).dtype == torch.float64
    assert NetworkJudge(network).log_class_posterior(x[:0]).shape == (0, 3)
    with pytest.raises(ValueError, match="^sigma: "):
        whole.log_class_posterior(x, 1.0, 0.5)


def test_network_judge_errors_describe_fingerprint():
    network = TinyCNN()
    x = torch.zeros(2, 3, 4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"^network: expected logits of shape \[2, 5\]"):
        NetworkJudge(network, num_classes=5).log_class_posterior(x)
    with pytest.raises(ValueError, match="^num_classes: "):
        NetworkJudge(nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match="^resize: "):
        NetworkJudge(network, resize=(3, 0))
    with pytest.raises(ValueError, match="^std: "):
        NetworkJudge(network, std=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="^input_range: "):
        NetworkJudge(network, input_range=(1, 1))
    with pytest.raises(ValueError, match="^x: expected images"):
        NetworkJudge(network, channels=3).log_class_posterior(torch.zeros(2, 2, 4, 4))
    with pytest.raises(ValueError, match="^x: resize needs images"):
        NetworkJudge(network, resize=4).log_class_posterior(torch.zeros(2, 16))

    class Overflow(nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 2), float("inf"), dtype=x.dtype)

    with pytest.raises(FloatingPointError, match="^NetworkJudge Overflow: .*2 of 2"):
        NetworkJudge(Overflow(), num_classes=2).log_class_posterior(x)

    judge = NetworkJudge(network, resize=8, mean=0.5, std=0.25, name="tiny")
    assert judge.describe().startswith("network judge tiny (3 classes;")
    assert "resize 8x8" in judge.describe()
    fingerprint = judge.fingerprint()
    assert NetworkJudge(network, resize=8, mean=0.5, std=0.25, batch_size=2).fingerprint() \
        == fingerprint
    assert NetworkJudge(network, resize=9, mean=0.5, std=0.25).fingerprint() != fingerprint
    assert NetworkJudge(TinyCNN(seed=1), resize=8, mean=0.5, std=0.25).fingerprint() \
        != fingerprint


# ----------------------------------------------------------------------------- torchvision

FAKE_TORCHVISION = '''
import torch
from torch import nn

calls = []


class Tiny(nn.Module):
    def __init__(self, num_classes=1000, aux_logits=False, **options):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)
        if aux_logits:
            self.AuxLogits = nn.Linear(2, 2)
        self.fc = nn.Linear(2, num_classes)

    def forward(self, x):
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def get_model(name, *, weights=None, **options):
    calls.append((name, weights, dict(options)))
    if name not in ("tiny", "inception_v3"):
        raise ValueError(f"Unknown model {name}")
    return Tiny(**options)
'''


@pytest.fixture
def fake_torchvision(tmp_path, monkeypatch):
    """A stand-in ``torchvision`` package whose ``models.get_model`` builds a tiny network."""
    root = tmp_path / "fake"
    (root / "torchvision" / "models").mkdir(parents=True)
    (root / "torchvision" / "__init__.py").write_text("from . import models\n")
    (root / "torchvision" / "models" / "__init__.py").write_text(FAKE_TORCHVISION)
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(root))
    yield root
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]


def _state_file(tmp_path, name, network, kind="safetensors"):
    from safetensors.torch import save_file

    path = tmp_path / name
    state = {k: v.detach().clone().contiguous() for k, v in network.state_dict().items()}
    if kind == "safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)
    return path


def test_from_torchvision_without_torchvision(tmp_path, monkeypatch):
    path = _state_file(tmp_path, "w.safetensors", nn.Linear(2, 2))
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import torchvision -> ImportError
    with pytest.raises(ValueError, match="bash scripts/setup.sh torchvision") as error:
        from_torchvision("resnet18", path)
    assert "\n" not in str(error.value)


def test_from_torchvision_with_a_broken_torchvision(tmp_path, monkeypatch):
    root = tmp_path / "broken"
    (root / "torchvision").mkdir(parents=True)
    (root / "torchvision" / "__init__.py").write_text(
        'raise RuntimeError("operator torchvision::nms does not exist")\n')
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(root))
    path = _state_file(tmp_path, "w.safetensors", nn.Linear(2, 2))
    with pytest.raises(ValueError, match="torchvision::nms does not exist") as error:
        from_torchvision("resnet18", path)
    message = str(error.value)
    assert "\n" not in message and "bash scripts/setup.sh torchvision" in message
    assert "could not be imported" in message
    sys.modules.pop("torchvision", None)


def test_from_torchvision_loading_with_a_stand_in(fake_torchvision, tmp_path):
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.Tiny(num_classes=3, aux_logits=True)  # the file has aux
    path = _state_file(tmp_path, "inception.safetensors", reference)
    judge = from_torchvision("inception_v3", path, num_classes=3)
    name, weights, options = torchvision.models.calls[-1]
    assert (name, weights) == ("inception_v3", None)
    assert options == {"aux_logits": False, "init_weights": False, "transform_input": True,
                       "num_classes": 3}
    assert judge.resize == (299, 299) and judge.channels == 3 and judge.num_classes == 3
    assert judge.mean == IMAGENET_MEAN and judge.std == IMAGENET_STD
    assert torch.equal(judge.network.fc.weight, reference.fc.weight)
    assert "torchvision inception_v3 (inception.safetensors)" in judge.describe()

    plain = torchvision.models.Tiny()  # the builder's default, 1000 classes
    pt_path = _state_file(tmp_path, "tiny.pt", plain, kind="pt")  # {"state_dict": ...}
    judge = from_torchvision("tiny", pt_path, resize=16, dtype=torch.float64)
    assert judge.num_classes == 1000 and judge.resize == (16, 16)  # from the last nn.Linear
    x = 2 * torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0),
                       dtype=torch.float64) - 1
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64)[:, None, None]
    images = torch.nn.functional.interpolate(((x + 1) / 2).clamp(0, 1), size=(16, 16),
                                             mode="bilinear", align_corners=False)
    with torch.no_grad():
        logits = plain.double()((images.expand(-1, 3, -1, -1) - mean) / std)
    torch.testing.assert_close(judge.log_class_posterior(x), torch.log_softmax(logits, 1),
                               rtol=0, atol=1e-12)

    with pytest.raises(ValueError, match="^weights_path: .*does not fit torchvision tiny"):
        from_torchvision("tiny", pt_path, num_classes=5)
    with pytest.raises(ValueError, match="^architecture: torchvision cannot build 'nope'"):
        from_torchvision("nope", pt_path)
    (tmp_path / "weights.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="^weights_path: expected a .safetensors"):
        from_torchvision("tiny", tmp_path / "weights.npz")
    with pytest.raises(FileNotFoundError, match="^weights_path: "):
        from_torchvision("tiny", tmp_path / "absent.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="^weights_path: .*could not be read"):
        from_torchvision("tiny", tmp_path / "junk.pt")


def _real_torchvision():
    try:
        import torchvision
        import torchvision.models  # noqa: F401
    except Exception as error:  # noqa: BLE001 - a mismatched build raises RuntimeError
        pytest.skip(f"torchvision is not importable here ({type(error).__name__})")
    return torchvision


def test_from_torchvision_with_real_torchvision(tmp_path):
    torchvision = _real_torchvision()
    torch.manual_seed(0)
    network = torchvision.models.resnet18(num_classes=3).eval()
    path = _state_file(tmp_path, "resnet18.safetensors", network)
    judge = from_torchvision("resnet18", path, num_classes=3, resize=32)
    x = 2 * torch.rand(4, 1, 20, 20, generator=torch.Generator().manual_seed(0)) - 1
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    images = torch.nn.functional.interpolate(((x + 1) / 2).clamp(0, 1), size=(32, 32),
                                             mode="bilinear", align_corners=False)
    with torch.no_grad():
        logits = network((images.expand(-1, 3, -1, -1) - mean) / std)
    torch.testing.assert_close(judge.log_class_posterior(x), torch.log_softmax(logits, 1),
                               rtol=0, atol=1e-5)
    inception = torchvision.models.inception_v3(num_classes=3, aux_logits=True,
                                                init_weights=False)
    inception_path = _state_file(tmp_path, "inception.pt", inception, kind="pt")
    judge = from_torchvision("inception_v3", inception_path, num_classes=3)
    assert judge.network.transform_input and judge.resize == (299, 299)
    assert judge.log_class_posterior(x[:1]).shape == (1, 3)


# ----------------------------------------------------------------------------- factories

FACTORIES = '''
import torch
from torch import nn

from guidelab.models import LogisticJudge


def logistic(scale=1.0):
    return LogisticJudge(scale * torch.eye(2, dtype=torch.float64),
                         torch.zeros(2, dtype=torch.float64), 1.0)


def first_columns(columns=3):
    return lambda x: x.flatten(1)[:, :columns]


def module(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).double()


class Holder:
    class Inner:
        @staticmethod
        def make():
            return logistic(3.0)


not_callable = 42


def text():
    return "not a judge"


def failing():
    raise RuntimeError("boom")
'''


@pytest.fixture
def factories(tmp_path, monkeypatch):
    (tmp_path / "judge_factories_ok.py").write_text(textwrap.dedent(FACTORIES))
    (tmp_path / "judge_factories_dep.py").write_text(
        "import guidelab_no_such_dependency_xyz\n")
    (tmp_path / "judge_factories_err.py").write_text(
        'raise RuntimeError("module-level failure")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("judge_factories_")]:
        del sys.modules[name]


def test_load_python_object(factories):
    make = load_python_object("judge_factories_ok:Holder.Inner.make")
    assert make().weight[0, 0] == 3.0
    assert load_python_object("judge_factories_ok:not_callable") == 42
    assert load_python_object("math:pi") == math.pi
    for bad in ("judge_factories_ok", "judge_factories_ok:", ":x", "a:b:c", "a b:c", 3):
        with pytest.raises(ValueError, match="^reference: expected 'package.module:attribute'"):
            load_python_object(bad)
    with pytest.raises(ValueError, match="^reference: no module named 'guidelab_absent_xyz'"):
        load_python_object("guidelab_absent_xyz:thing")
    with pytest.raises(ValueError, match="^reference: no module named 'judge_factories_ok.sub'"):
        load_python_object("judge_factories_ok.sub:thing")
    with pytest.raises(ValueError, match="^reference: importing module 'judge_factories_dep' .*"
                                         "ModuleNotFoundError.*guidelab_no_such_dependency"):
        load_python_object("judge_factories_dep:thing")
    with pytest.raises(ValueError, match="RuntimeError: module-level failure"):
        load_python_object("judge_factories_err:thing")
    with pytest.raises(ValueError, match="^reference: judge_factories_ok has no attribute "
                                         "'missing'"):
        load_python_object("judge_factories_ok:missing")
    with pytest.raises(ValueError, match="^reference: judge_factories_ok:Holder has no attribute "
                                         "'Missing'"):
        load_python_object("judge_factories_ok:Holder.Missing.make")


def test_judge_from_factory(factories):
    judge = judge_from_factory("judge_factories_ok:logistic", {"scale": 2.0})
    assert isinstance(judge, LogisticJudge) and judge.weight[1, 1] == 2.0

    x = torch.tensor([[0.5, -1.0, 2.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 3.0, -2.0, 1.0]],
                     dtype=torch.float64)
    wrapped = judge_from_factory("judge_factories_ok:first_columns", {"columns": 3},
                                 num_classes=3)
    expected = log_softmax(x[:, :3].numpy(), axis=1)
    np.testing.assert_allclose(wrapped.log_class_posterior(x).numpy(), expected, atol=1e-14)
    broken = x.clone()
    broken[1, 3] = float("nan")
    out = wrapped.log_class_posterior(broken)
    assert torch.isnan(out[1]).all()
    np.testing.assert_allclose(out[[0, 2]].numpy(), expected[[0, 2]], atol=1e-14)
    assert "judge_factories_ok:first_columns" in wrapped.describe()
    assert wrapped.num_classes == 3
    other = judge_from_factory("judge_factories_ok:first_columns", {"columns": 2})
    assert other.num_classes is None and other.log_class_posterior(x).shape == (3, 2)
    assert other.num_classes == 2 and other.fingerprint() != wrapped.fingerprint()
    with pytest.raises(ValueError, match="^sigma: "):
        wrapped.log_class_posterior(x, 0.6, 0.8)

    network = judge_from_factory("judge_factories_ok:module", {"seed": 0})
    torch.manual_seed(0)
    reference = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).double()
    with torch.no_grad():
        torch.testing.assert_close(network.log_class_posterior(x),
                                   torch.log_softmax(reference(x), 1))
    assert judge_from_factory("judge_factories_ok:module", {"seed": 0}).fingerprint() == \
        network.fingerprint()
    assert judge_from_factory("judge_factories_ok:module", {"seed": 1}).fingerprint() != \
        network.fingerprint()

    with pytest.raises(ValueError, match="^options: judge_factories_ok:logistic does not "
                                         "accept"):
        judge_from_factory("judge_factories_ok:logistic", {"bogus": 1})
    with pytest.raises(ValueError, match="^options: "):
        judge_from_factory("judge_factories_ok:logistic", [1])
    with pytest.raises(ValueError, match="^reference: 'judge_factories_ok:not_callable' is a "
                                         "int"):
        judge_from_factory("judge_factories_ok:not_callable")
    with pytest.raises(ValueError, match="^reference: the factory .* returned a str"):
        judge_from_factory("judge_factories_ok:text")
    with pytest.raises(ValueError, match="^reference: the factory .* raised RuntimeError: boom"):
        judge_from_factory("judge_factories_ok:failing")
    with pytest.raises(ValueError, match="^num_classes: "):
        judge_from_factory("judge_factories_ok:logistic", num_classes=3)
