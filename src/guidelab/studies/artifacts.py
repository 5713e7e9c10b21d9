r"""The model store: trained models and fitted judges, built once and found again by what
produced them.

An *artifact* is anything a study builds before it samples: a denoiser trained on a data
part, a noisy classifier, a calibrated judge. Its *key* is 20 hex digits of SHA-256 over the
canonical JSON of everything that determines it: the kind, the settings of its section (the
architecture, training options, seed), the fingerprint of the data part it learned from, the
dtype, and guidelab's version (a new version never reuses an old artifact). The artifact lives
at ``<store>/<kind>-<key>.safetensors``:

* looked up first: a file that is there is loaded, never rebuilt;
* a file that fails to load (truncated, edited: its digest does not match) is moved aside and
  built again;
* built otherwise, under an exclusive lock on ``<file>.lock`` (a second process, or a Ray
  worker, building the same key waits and then loads), written to a temporary name and renamed,
  so a run killed during training leaves no file and the next run trains that artifact again,
  while artifacts that finished are reused.

The store's folder is ``$GUIDELAB_CACHE/models`` if set, else ``$XDG_CACHE_HOME/guidelab/models``,
else ``~/.cache/guidelab/models``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from .._version import __version__

__all__ = ["ModelStore", "Artifact", "default_store_dir", "artifact_key"]


def default_store_dir() -> Path:
    """``$GUIDELAB_CACHE/models``, else ``$XDG_CACHE_HOME/guidelab/models``, else
    ``~/.cache/guidelab/models``."""
    if os.environ.get("GUIDELAB_CACHE"):
        return Path(os.environ["GUIDELAB_CACHE"]) / "models"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "guidelab" / "models"


def artifact_key(kind: str, payload: dict) -> str:
    """20 hex digits of SHA-256 over ``{kind, payload, guidelab version}`` as canonical JSON."""
    text = json.dumps({"kind": kind, "payload": payload, "guidelab": __version__},
                      sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass
class Artifact:
    """A built or loaded artifact.

    Attributes:
        value: the object (a score model, a classifier, a judge).
        path: its file in the store.
        key: its key.
        cached: whether it was loaded rather than built.
        seconds: time to build (or load) it.
        info: what building reported (final training loss, ...), empty when loaded.
    """

    value: Any
    path: Path
    key: str
    cached: bool
    seconds: float
    info: dict


class ModelStore:
    """A folder of artifacts (module docstring).

    Args:
        root: the folder (default :func:`default_store_dir`); created when first written.
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_store_dir()

    def path(self, kind: str, key: str) -> Path:
        return self.root / f"{kind}-{key}.safetensors"

    @staticmethod
    def _load(path: Path, load: Callable[[Path], Any], say: Callable[[str], None]) -> Any:
        """The artifact at ``path``, or None when the file is damaged (a truncated or edited
        file fails its digest check): it is moved aside to ``<name>.damaged-<time>`` with one
        line, and the caller builds the artifact again."""
        try:
            return load(path)
        except (ValueError, OSError) as error:
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
            aside = path.with_name(f"{path.name}.damaged-{stamp}-{os.getpid()}")
            os.replace(path, aside)
            say(f"model store: {path.name} could not be read ({' '.join(str(error).split())}); "
                f"moved aside to {aside.name}, building it again")
            return None

    def get(self, kind: str, payload: dict, *, build: Callable[[], tuple[Any, dict]],
            save: Callable[[Any, Path], None], load: Callable[[Path], Any],
            log: Callable[[str], None] | None = None) -> Artifact:
        """The artifact of ``(kind, payload)``: loaded if the store has it, else built, saved
        and returned.

        Args:
            kind: a short name (``denoiser``, ``classifier``, ``judge``).
            payload: JSON-able description of everything that determines the artifact.
            build: () -> (object, info dict).
            save: (object, path) writes it (to exactly ``path``).
            load: (path) -> object.
            log: one-line messages (built or loaded, and where).
        """
        key = artifact_key(kind, payload)
        path = self.path(kind, key)
        say = log or (lambda message: None)
        start = time.perf_counter()
        if path.exists():
            loaded = self._load(path, load, say)
            if loaded is not None:
                return Artifact(loaded, path, key, True, time.perf_counter() - start, {})
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ValueError(f"model store: cannot create {self.root}: {error.strerror}") \
                from None
        with FileLock(str(path) + ".lock"):
            if path.exists():  # built by another process while this one waited
                loaded = self._load(path, load, say)
                if loaded is not None:
                    return Artifact(loaded, path, key, True, time.perf_counter() - start, {})
            say(f"{kind}: building (no artifact {path.name} in {self.root})")
            value, info = build()
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                save(value, tmp)
                os.replace(tmp, path)
            finally:
                if tmp.exists():
                    tmp.unlink()
        seconds = time.perf_counter() - start
        say(f"{kind}: built in {seconds:.1f} s, saved as {path}")
        return Artifact(value, path, key, False, seconds, info)
