"""Spec problems as one line: ``<source>: <dotted.key.path>: <what was expected>``."""

from __future__ import annotations

from typing import Any

__all__ = ["SpecError", "short"]


class SpecError(ValueError):
    """A spec problem: ``<source>: <dotted.key.path>: <what was expected>`` in one line.

    Attributes:
        source: the file (or ``--set KEY``) the value came from.
        path: the dotted key path, e.g. ``sampler.steps`` or ``sweep.w[2]``.
        message: what was expected.
        more: how many further problems were found (not shown).
    """

    def __init__(self, source: str, path: str, message: str, more: int = 0):
        self.source, self.path, self.message, self.more = str(source), path, message, more
        where = f"{self.source}: " if self.source else ""
        where += f"{path}: " if path else ""
        tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        super().__init__(f"{where}{message}{tail}")

    def with_source(self, source: str) -> SpecError:
        return SpecError(source, self.path, self.message, self.more)


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
