r"""Checkpoints that are safe to load: safetensors weights plus a JSON header, never pickle.

A checkpoint is one safetensors file (a little-endian u64 header length, a JSON header listing
each tensor's dtype, shape and byte range, then the raw bytes). Its ``__metadata__`` holds one
entry, ``guidelab``, a JSON object:

    {"format": "guidelab.models", "format_version": 1,
     "architecture": "MLPDenoiser", "kind": "denoiser" | "classifier",
     "args": {...constructor arguments...}, "target": "eps" | "x0" | "v" | null,
     "num_classes": C, "null_class": C | null, "input_shape": [...],
     "noise": {"distribution": ..., "range": [min, max] of sigma/alpha} | null,
     "schedule": ..., "data": "...", "training": {...} | null, "extra": {...} | null,
     "dtype": "float32", "guidelab_version": "...", "torch_version": "...",
     "sha256": "<hex digest of the tensors' bytes, in sorted name order>"}

Loading never executes code from the file: the architecture is looked up by name among
guidelab's own networks and built from the JSON arguments, then the tensors are copied in.
Every way a file can be wrong is a ValueError naming the path and the fault: a truncated file
(shorter than its header says), trailing bytes, a header that is not JSON, a safetensors file
without a guidelab header (foreign), an unknown architecture, arguments the architecture
rejects, missing, unexpected or mismatched tensors, and bytes that do not match the stored
SHA-256 digest (an edited file).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from .. import _json
from .learned import LearnedClassifier, LearnedScoreModel
from .networks import ARCHITECTURES

__all__ = ["save", "load", "read_header", "FORMAT", "FORMAT_VERSION"]

FORMAT = "guidelab.models"
FORMAT_VERSION = 1
METADATA_KEY = "guidelab"


def _network_of(model) -> nn.Module:
    network = getattr(model, "network", model)
    if not isinstance(network, nn.Module):
        raise ValueError(f"model: expected a guidelab network or a LearnedScoreModel / "
                         f"LearnedClassifier, got {type(model).__name__}")
    name = type(network).__name__
    if ARCHITECTURES.get(name) is not type(network):
        raise ValueError(f"model: cannot save architecture {name!r}; checkpoints hold "
                         f"guidelab's own networks {sorted(ARCHITECTURES)}")
    return network


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over each tensor's raw bytes (names sorted), name and shape included."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{list(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save(model, path, *, data: Any = None, schedule: Any = None,
         extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to ``path`` as a safetensors checkpoint with a guidelab header.

    The header is strict JSON: a non-finite float in it (a diverged loss in the training record,
    say) is written as ``null``.

    Args:
        model: a guidelab network (:class:`~guidelab.models.MLPDenoiser`,
            :class:`~guidelab.models.ConvDenoiser`, :class:`~guidelab.models.NoisyClassifier`)
            or a :class:`~guidelab.models.LearnedScoreModel` / ``LearnedClassifier`` of one.
        path: the file to write (written to a temporary file, then renamed).
        data: a JSON-able description of the training data (default: that of a loaded model's
            header, else the description recorded by :func:`~guidelab.models.train_denoiser`).
        schedule: a JSON-able description of the schedule the model is meant for (default: a
            loaded model's).
        extra: any other JSON-able information (default: a loaded model's).

    Returns:
        The path written.
    """
    network = _network_of(model)
    previous = getattr(model, "metadata", None) or {}
    path = Path(path)
    tensors = {name: value.detach().cpu().contiguous()
               for name, value in network.state_dict().items()}  # persistent entries only
    training = getattr(network, "training_info", None)
    config = (training or {}).get("config", {})
    noise = None
    if "noise_range" in config:
        noise = {"distribution": config.get("noise_distribution"),
                 "range": config["noise_range"]}
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in tensors.values()})
    from .._version import __version__

    header = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "architecture": type(network).__name__, "kind": network.kind,
        "args": network.config, "target": getattr(network, "target", None),
        "num_classes": network.num_classes, "null_class": getattr(network, "null_class", None),
        "input_shape": list(network.input_shape), "noise": noise,
        "schedule": schedule if schedule is not None else previous.get("schedule"),
        "data": data if data is not None else previous.get("data", config.get("data")),
        "training": training, "extra": extra if extra is not None else previous.get("extra"),
        "dtype": dtypes[0] if len(dtypes) == 1 else dtypes,
        "guidelab_version": __version__, "torch_version": torch.__version__,
        "sha256": _digest(tensors),
    }
    try:
        text = _json.dumps(header, sort_keys=True)  # NaN and infinities (a loss) -> null
    except (TypeError, ValueError) as error:
        raise ValueError(f"data, schedule, extra: expected JSON-able values ({error})") from None
    blob = save_safetensors(tensors, metadata={METADATA_KEY: text})
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.",
                                     delete=False) as handle:
        handle.write(blob)
        temporary = handle.name
    os.replace(temporary, path)
    return path


def read_guidelab_file(path: Path, *, what: str = "checkpoint",
                       reader: str = "guidelab.models.load reads files written by "
                                     "guidelab.models.save") -> tuple[bytes, dict[str, Any]]:
    """The bytes and the guidelab header (a JSON object under the metadata key ``guidelab``)
    of a safetensors file written by guidelab, with its structure checked: the length field,
    the JSON table, the tensors' extent (no truncation, no trailing bytes), the header.

    Every failure is a ValueError starting ``path:`` and naming the file (FileNotFoundError
    for a missing one); ``what`` and ``reader`` word the messages. The format of the header is
    the caller's to check (model checkpoints and judges share this layout).
    """
    if not path.is_file():
        raise FileNotFoundError(f"path: no {what} file at {path}")
    blob = path.read_bytes()
    size = len(blob)
    if size < 8:
        raise ValueError(f"path: {path} is truncated or not a safetensors file "
                         f"({size} bytes, fewer than the 8-byte header length)")
    (header_size,) = struct.unpack("<Q", blob[:8])
    if 8 + header_size > size:
        raise ValueError(f"path: {path} is truncated: its header claims {header_size} bytes "
                         f"but the file has {size - 8} after the length field")
    try:
        table = json.loads(blob[8:8 + header_size])
        if not isinstance(table, dict):
            raise ValueError("not an object")
        ends = [int(entry["data_offsets"][1]) for name, entry in table.items()
                if name != "__metadata__"]
    except (UnicodeDecodeError, ValueError, TypeError, KeyError, IndexError) as error:
        raise ValueError(f"path: {path} is not a readable safetensors file (its header is not "
                         f"a safetensors JSON table: {error})") from None
    expected = 8 + header_size + max(ends, default=0)
    if size < expected:
        raise ValueError(f"path: {path} is truncated: {size} bytes, its header describes "
                         f"{expected}")
    if size > expected:
        raise ValueError(f"path: {path} has {size - expected} trailing bytes after the tensors "
                         f"its header describes (edited or concatenated)")
    metadata = table.get("__metadata__") or {}
    if not isinstance(metadata, dict) or METADATA_KEY not in metadata:
        raise ValueError(f"path: {path} is a safetensors file without a guidelab header (a "
                         f"foreign {what}; {reader})")
    try:
        header = json.loads(metadata[METADATA_KEY])
        if not isinstance(header, dict):
            raise ValueError("not an object")
    except (TypeError, ValueError) as error:
        raise ValueError(f"path: {path} has a guidelab header that is not a JSON object "
                         f"({error})") from None
    return blob, header


def _parse(path: Path) -> tuple[bytes, dict[str, Any]]:
    """The file's bytes and its validated guidelab checkpoint header."""
    blob, header = read_guidelab_file(path)
    if header.get("format") != FORMAT:
        raise ValueError(f"path: {path} has format {header.get('format')!r}, expected {FORMAT!r}")
    if header.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"path: {path} has format version {header.get('format_version')!r}; "
                         f"this guidelab reads version {FORMAT_VERSION}")
    return blob, header


def read_header(path) -> dict[str, Any]:
    """The guidelab header of the checkpoint at ``path`` (validated as in :func:`load`)."""
    return _parse(Path(path))[1]


def load(path, *, device: torch.device | str = "cpu") -> LearnedScoreModel | LearnedClassifier:
    """Read a checkpoint written by :func:`save` (module docstring for what is checked).

    Args:
        path: the checkpoint file.
        device: where to put the network.

    Returns:
        A :class:`~guidelab.models.LearnedScoreModel` (denoisers) or
        :class:`~guidelab.models.LearnedClassifier` (classifiers) whose ``network`` holds the
        stored weights bit for bit and whose ``metadata`` is the header. ValueError naming the
        path for any fault; FileNotFoundError if there is no file.
    """
    path = Path(path)
    blob, header = _parse(path)
    name = header.get("architecture")
    if name not in ARCHITECTURES:
        raise ValueError(f"path: {path} holds unknown architecture {name!r}; known: "
                         f"{sorted(ARCHITECTURES)}")
    args = header.get("args")
    if not isinstance(args, dict):
        raise ValueError(f"path: {path} has no constructor arguments ('args') for {name}")
    try:
        network = ARCHITECTURES[name](**args)
    except (TypeError, ValueError) as error:
        raise ValueError(f"path: {path} has arguments that {name} rejects: {error}") from None
    try:
        tensors = load_safetensors(blob)
    except Exception as error:  # safetensors raises its own SafetensorError
        raise ValueError(f"path: {path} is not a readable safetensors file ({error})") from None
    if _digest(tensors) != header.get("sha256"):
        raise ValueError(f"path: {path} has tensors whose SHA-256 digest does not match its "
                         f"header (the file was edited or corrupted)")
    expected = network.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = [f"{k}: file {list(tensors[k].shape)}, {name}({args}) "
                  f"{list(expected[k].shape)}" for k in sorted(set(expected) & set(tensors))
                  if tensors[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing tensors {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected tensors {unexpected[:5]}")
        if mismatched:
            parts.append(f"mismatched shapes {mismatched[:3]}")
        raise ValueError(f"path: {path} does not fit {name}: " + "; ".join(parts))
    floating = {t.dtype for t in tensors.values() if t.is_floating_point()}
    if len(floating) == 1:
        network.to(floating.pop())
    network.load_state_dict(tensors, strict=True)
    network.to(device)
    network.eval()
    if header.get("training") is not None:
        network.training_info = header["training"]
    if header.get("kind") == "classifier" or network.kind == "classifier":
        return LearnedClassifier(network, metadata=header)
    return LearnedScoreModel(network, metadata=header)
