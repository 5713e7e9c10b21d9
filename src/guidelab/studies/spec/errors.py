"""Spec problems: ``<source>: <dotted.key.path>: <what was expected>``, one line per problem."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["SpecError", "short"]


class SpecError(ValueError):
    """One or more spec problems, each ``<source>: <dotted.key.path>: <what was expected>`` on
    its own line (the first problem's attributes are the error's).

    Attributes:
        source: the file (or ``--set KEY``, or a command-line option) the value came from.
        path: the dotted key path, e.g. ``sampler.steps`` or ``sweep.w[2]``.
        message: what was expected.
        others: the further problems found at the same time (single-problem SpecErrors).
        more: how many further problems there are (``len(others)``).
        option_message: the message to show instead of ``message`` when the value came from a
            command-line option that is not ``--set`` (phrased in what the option can set),
            or None.
    """

    def __init__(self, source: str, path: str, message: str, more: int = 0, *,
                 others: Sequence[SpecError] = (), option_message: str | None = None):
        self.source, self.path, self.message = str(source), path, message
        self.option_message = option_message
        self.others: tuple[SpecError, ...] = tuple(
            problem for other in others for problem in other.problems)
        self.more = len(self.others) or more
        tail = f" (and {more} more problem{'s' if more > 1 else ''})" \
            if more and not self.others else ""
        super().__init__("\n".join([self.line + tail, *(other.line for other in self.others)]))

    @property
    def line(self) -> str:
        """The first problem as one line: ``<source>: <path>: <message>``."""
        where = f"{self.source}: " if self.source else ""
        where += f"{self.path}: " if self.path else ""
        return f"{where}{self.message}"

    @property
    def problems(self) -> list[SpecError]:
        """Every problem as its own single-problem SpecError, the first first."""
        first = SpecError(self.source, self.path, self.message,
                          option_message=self.option_message)
        return [first, *self.others]

    @classmethod
    def combine(cls, problems: Sequence[SpecError]) -> SpecError:
        """One SpecError listing ``problems`` (at least one) in order, repeated lines once."""
        seen: set[str] = set()
        unique = []
        for problem in (p for error in problems for p in error.problems):
            if problem.line not in seen:
                seen.add(problem.line)
                unique.append(problem)
        first, rest = unique[0], unique[1:]
        return cls(first.source, first.path, first.message, others=rest,
                   option_message=first.option_message)

    def map(self, change) -> SpecError:
        """A SpecError of ``change(problem)`` for each single problem."""
        return SpecError.combine([change(problem) for problem in self.problems])

    def with_source(self, source: str) -> SpecError:
        """Every problem named by ``source``."""
        return self.map(lambda problem: SpecError(source, problem.path, problem.message,
                                                  option_message=problem.option_message))


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
