r"""Loading a spec: a TOML file or a built-in spec shipped in ``guidelab/studies/specs``, with
``--set`` overrides, validated and resolved.

A file is checked against :data:`~.limits.MAX_SPEC_BYTES` before it is read and must be UTF-8;
every way the TOML parser can fail (syntax, deep nesting, memory, huge integers) is one
:class:`~.errors.SpecError` naming the file, and the depth of the data is checked
(iteratively) before ``--set`` values are merged into it by ``copy.deepcopy``."""

from __future__ import annotations

import importlib.resources
import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import SpecError
from .limits import MAX_DEPTH, MAX_SPEC_BYTES, check_depth
from .paths import apply_overrides, format_path, parse_set, split_path
from .schema import Spec
from .validation import validate_spec

__all__ = ["load_spec", "builtin_specs", "builtin_spec_text", "parse_spec_text"]


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
        text = _read_spec_file(path, label)
    elif path.exists():
        raise SpecError(str(source), "", "expected a spec file (TOML), got a folder")
    else:
        try:
            text = builtin_spec_text(str(source))
        except ValueError:
            raise SpecError(str(source), "", "no such file, and not the name of a built-in "
                            f"spec ({', '.join(builtin_specs())})") from None
        label = f"{source} (built-in)"
    data = parse_spec_text(text, label)
    pairs = [parse_set(item) if isinstance(item, str) else (format_path(split_path(item[0])),
                                                             item[1]) for item in overrides]
    for key, value in pairs:
        try:
            check_depth(value, tuple(split_path(key)))
        except SpecError as error:
            raise error.with_source(f"--set {key}") from None
    labels = {key: f"--set {key}" for key, _ in pairs}
    for key, _ in pairs:  # a table the file does not have is the option's: name it
        created = _created_table(data, split_path(key))
        if created is not None:
            labels.setdefault(created, f"--set {key}")
    data = apply_overrides(data, pairs)
    return validate_spec(data, label, set_keys=labels)


def _created_table(data: dict, parts: list[str]) -> str | None:
    """The dotted path of the first table above ``parts`` that ``data`` lacks (and setting
    ``parts`` creates), or None."""
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node, dict) or not isinstance(node.get(part), dict):
            return format_path(parts[:i + 1])
        node = node[part]
    return None


def _read_spec_file(path: Path, label: str) -> str:
    """The text of a spec file: at most :data:`~.limits.MAX_SPEC_BYTES` bytes of UTF-8, the
    size checked before anything is read."""
    try:
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise SpecError(label, "", f"the file is {size:,} bytes, over the limit of "
                            f"{MAX_SPEC_BYTES:,} bytes of a spec (MAX_SPEC_BYTES in "
                            f"guidelab.studies.spec.limits)")
        with path.open("rb") as handle:
            raw = handle.read(MAX_SPEC_BYTES + 1)  # the file may have grown since
    except OSError as error:
        raise SpecError(label, "", f"cannot read the spec ({error})") from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(label, "", f"the file is over the limit of {MAX_SPEC_BYTES:,} bytes "
                        f"of a spec (MAX_SPEC_BYTES in guidelab.studies.spec.limits)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SpecError(label, "", f"not UTF-8 text (byte {raw[error.start]:#04x} at offset "
                        f"{error.start}); a spec is a TOML file") from None


def parse_spec_text(text: str, label: str) -> dict:
    """TOML text -> data, every failure of the parser one :class:`SpecError` naming ``label``:
    a syntax error, and what a pathological input does (a ``RecursionError`` from deep
    nesting, a ``MemoryError``, an integer too long to convert); then the nesting depth
    (:func:`~.limits.check_depth`), before anything recursive touches the data."""
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(label, "", f"{len(text):,} characters, over the limit of "
                        f"{MAX_SPEC_BYTES:,} of a spec (MAX_SPEC_BYTES in "
                        f"guidelab.studies.spec.limits)")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SpecError(label, "", f"not valid TOML: {' '.join(str(error).split())}") from None
    except RecursionError:
        raise SpecError(label, "", f"not valid TOML: nested too deeply to parse (the limit is "
                        f"{MAX_DEPTH} levels of arrays and tables)") from None
    except MemoryError:
        raise SpecError(label, "", "not valid TOML: too large to parse") from None
    except ValueError as error:  # e.g. an integer of more than 4300 digits
        message = " ".join(str(error).split())[:200]
        raise SpecError(label, "", f"not valid TOML: {message}") from None
    try:
        check_depth(data)
    except SpecError as error:
        raise error.with_source(label) from None
    return data
