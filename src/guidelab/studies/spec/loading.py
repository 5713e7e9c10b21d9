r"""Loading a spec: a TOML file or a built-in spec shipped in ``guidelab/studies/specs``, with
``--set`` overrides, validated and resolved."""

from __future__ import annotations

import importlib.resources
import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import SpecError
from .paths import apply_overrides, format_path, parse_set, split_path
from .schema import Spec
from .validation import validate_spec

__all__ = ["load_spec", "builtin_specs", "builtin_spec_text"]


def builtin_specs() -> dict[str, str]:
    """name -> one-line description of each built-in spec."""
    out = {}
    for path in sorted(_specs_dir().iterdir(), key=lambda p: p.name):
        if path.name.endswith(".toml"):
            data = tomllib.loads(path.read_text())
            out[path.name[:-5]] = str(data.get("description", "")).strip().splitlines()[0] \
                if data.get("description") else ""
    return out


def _specs_dir():
    return importlib.resources.files("guidelab.studies") / "specs"


def builtin_spec_text(name: str) -> str:
    """The TOML text of built-in spec ``name``; ValueError naming ``spec`` if unknown."""
    path = _specs_dir() / f"{name}.toml"
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or not path.is_file():
        raise ValueError(f"spec: unknown built-in spec {name!r}; expected one of "
                         f"{', '.join(builtin_specs())}")
    return path.read_text()


def load_spec(source: str | Path, overrides: Sequence[str | tuple[str, Any]] = ()) -> Spec:
    """Read, override, validate and resolve a spec.

    Args:
        source: a TOML file, or the name of a built-in spec (``guidelab spec list``).
        overrides: ``"key.path=value"`` strings (TOML literals, as ``--set``) or
            (dotted path, value) pairs, applied in order.

    Returns:
        The resolved :class:`Spec`.

    Raises:
        SpecError: a problem with the file, an override or a value, naming the key path.
    """
    path = Path(source)
    if path.is_file():
        label = str(source)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as error:
            raise SpecError(label, "", f"cannot read the spec ({error})") from None
    elif path.exists():
        raise SpecError(str(source), "", "expected a spec file (TOML), got a folder")
    else:
        try:
            text = builtin_spec_text(str(source))
        except ValueError:
            raise SpecError(str(source), "", "no such file, and not the name of a built-in "
                            f"spec ({', '.join(builtin_specs())})") from None
        label = f"{source} (built-in)"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SpecError(label, "", f"not valid TOML: {error}") from None
    pairs = [parse_set(item) if isinstance(item, str) else (format_path(split_path(item[0])),
                                                             item[1]) for item in overrides]
    data = apply_overrides(data, pairs)
    return validate_spec(data, label, set_keys=[key for key, _ in pairs])
