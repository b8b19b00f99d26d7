"""Problems with an experiment, located by field path; the language layer maps paths back to
file/line/column."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Issue:
    """A problem with an experiment, located by field path (e.g. ``"decompose.rank"``)."""

    path: str
    message: str
    hint: str = ""
    also: tuple[str, ...] = ()  # other paths involved in a cross-field problem


class SpecValidationError(ValueError):
    def __init__(self, issues: list[Issue]):
        self.issues = issues
        super().__init__("; ".join(f"{i.path}: {i.message}" for i in issues))
