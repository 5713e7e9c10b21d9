"""Checkpoints round-trip bit for bit; damaged, foreign or mismatched files are clear errors."""

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

import guidelab
from guidelab import GaussianMixture
from guidelab.models import (
    ConvDenoiser,
    LearnedClassifier,
    LearnedScoreModel,
    MLPDenoiser,
    NoisyClassifier,
    load,
    read_header,
    save,
    train_denoiser,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def trained_network():
    gm = GaussianMixture([[-1.0, 0.0], [1.0, 0.0]], [0.5, 0.5], [0.5, 0.5], [0, 1])
    net = MLPDenoiser(2, 2, hidden=16, depth=2, target="v", seed=4)
    train_denoiser(net, gm, steps=5, batch_size=16, progress=False, device="cpu")
    return net


def bits(tensor):
    return tensor.contiguous().view(torch.int32 if tensor.dtype == torch.float32
                                    else torch.int64)


@pytest.mark.parametrize("make", [
    trained_network,
    lambda: ConvDenoiser(3, width=8, target="x0", data_std=0.5, seed=2),
    lambda: NoisyClassifier((1, 8, 8), 4, width=8, seed=1),
    lambda: NoisyClassifier(3, 5, hidden=8, depth=1, seed=1).double(),
])
def test_round_trip_is_bit_for_bit(tmp_path, make):
    net = make()
    path = save(net, tmp_path / "model.safetensors", data="two Gaussians",
                schedule={"name": "linear", "steps": 100})
    loaded = load(path)
    expected_type = LearnedClassifier if net.kind == "classifier" else LearnedScoreModel
    assert isinstance(loaded, expected_type)
    assert type(loaded.network) is type(net)
    original, restored = net.state_dict(), loaded.network.state_dict()
    assert original.keys() == restored.keys()
    for key in original:
        assert original[key].dtype == restored[key].dtype
        assert torch.equal(bits(original[key]), bits(restored[key])), key
    header = loaded.metadata
    assert header["architecture"] == type(net).__name__
    assert header["args"] == net.config
    assert header["data"] == "two Gaussians"
    assert header["guidelab_version"] == guidelab.__version__
    # saving the loaded model writes the same bytes
    again = save(loaded, tmp_path / "again.safetensors")
    assert again.read_bytes() == path.read_bytes()
    # and the same outputs
    x = torch.randn(4, *net.input_shape, dtype=next(net.parameters()).dtype)
    alpha, sigma = torch.full((4,), 0.6, dtype=x.dtype), torch.full((4,), 0.8, dtype=x.dtype)
    args = (x, alpha, sigma) if net.kind == "classifier" else (x, alpha, sigma,
                                                              torch.tensor([0, 1, 2, 0]) % 2)
    assert torch.equal(net(*args), loaded.network(*args))


def test_header_records_training_and_noise_range(tmp_path):
    net = trained_network()
    path = save(net, tmp_path / "m.safetensors")
    header = read_header(path)
    assert header["target"] == "v"
    assert header["noise"]["range"] == [1e-3, 1e3]
    assert header["training"]["steps"] == 5
    assert header["data"].startswith("exact draws from GaussianMixture")


def test_damaged_files_give_a_value_error_naming_the_path(tmp_path):
    path = save(trained_network(), tmp_path / "model.safetensors")
    blob = path.read_bytes()
    (header_size,) = struct.unpack("<Q", blob[:8])

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(blob[:-10])
    with pytest.raises(ValueError, match=r"^path: .*truncated\.safetensors is truncated"):
        load(truncated)
    cut_header = tmp_path / "cut.safetensors"
    cut_header.write_bytes(blob[:header_size // 2])
    with pytest.raises(ValueError, match="cut.safetensors is truncated"):
        load(cut_header)
    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(b"abc")
    with pytest.raises(ValueError, match="tiny.safetensors is truncated"):
        load(tiny)

    edited = tmp_path / "edited.safetensors"
    flipped = bytearray(blob)
    flipped[-5] ^= 0x01  # one bit of one weight
    edited.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="edited.safetensors has tensors whose SHA-256"):
        load(edited)

    garbled = tmp_path / "garbled.safetensors"
    damaged = bytearray(blob)
    damaged[9] = ord("#")  # inside the JSON header
    garbled.write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match="garbled.safetensors is not a readable safetensors"):
        load(garbled)

    trailing = tmp_path / "trailing.safetensors"
    trailing.write_bytes(blob + b"\0" * 16)
    with pytest.raises(ValueError, match="trailing.safetensors has 16 trailing bytes"):
        load(trailing)

    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load(tmp_path / "missing.safetensors")


def rewrite_header(path, target, change):
    """Copy ``path`` to ``target`` with its guidelab header edited by ``change(dict)``."""
    blob = path.read_bytes()
    (size,) = struct.unpack("<Q", blob[:8])
    table = json.loads(blob[8:8 + size])
    header = json.loads(table["__metadata__"]["guidelab"])
    change(header)
    table["__metadata__"]["guidelab"] = json.dumps(header)
    text = json.dumps(table).encode()
    text += b" " * (-len(text) % 8)
    target.write_bytes(struct.pack("<Q", len(text)) + text + blob[8 + size:])
    return target


def test_foreign_unknown_and_mismatched_files(tmp_path):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(3, 3)}, str(foreign), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="foreign.safetensors is a safetensors file without a "
                                         "guidelab header"):
        load(foreign)

    path = save(trained_network(), tmp_path / "model.safetensors")
    unknown = rewrite_header(path, tmp_path / "unknown.safetensors",
                             lambda h: h.update(architecture="Transformer"))
    with pytest.raises(ValueError, match="unknown.safetensors holds unknown architecture "
                                         "'Transformer'"):
        load(unknown)

    def wider(header):
        header["args"]["hidden"] = 32

    mismatched = rewrite_header(path, tmp_path / "mismatched.safetensors", wider)
    with pytest.raises(ValueError, match="mismatched.safetensors does not fit MLPDenoiser: "
                                         "mismatched shapes"):
        load(mismatched)

    def bad_args(header):
        header["args"]["target"] = "noise"

    rejected = rewrite_header(path, tmp_path / "rejected.safetensors", bad_args)
    with pytest.raises(ValueError, match="rejected.safetensors has arguments that MLPDenoiser "
                                         "rejects: target"):
        load(rejected)


def test_only_guidelab_networks_are_saved(tmp_path):
    with pytest.raises(ValueError, match="^model"):
        save(torch.nn.Linear(2, 2), tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match="^data, schedule, extra"):
        save(MLPDenoiser(2, 2, hidden=4, depth=1), tmp_path / "y.safetensors",
             extra={"bad": object()})


def test_non_finite_header_values_are_stored_as_null(tmp_path):
    # The header is strict JSON (no NaN / Infinity words): a strict parser reads it.
    path = save(MLPDenoiser(2, 2, hidden=4, depth=1), tmp_path / "z.safetensors",
                extra={"loss": float("nan"), "curve": [1.0, float("inf")]})
    blob = path.read_bytes()
    (size,) = struct.unpack("<Q", blob[:8])
    text = json.loads(blob[8:8 + size])["__metadata__"]["guidelab"]

    def refuse(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    assert json.loads(text, parse_constant=refuse)["extra"] == {"loss": None, "curve": [1.0, None]}
    assert read_header(path)["extra"] == {"loss": None, "curve": [1.0, None]}
    load(path)
