"""Domain errors. The CLI and the Ansible module turn these into messages and
exit codes; nothing here knows about either."""

from __future__ import annotations

from dataclasses import dataclass


class TrunklineError(Exception):
    """Base of every error Trunkline reports without a traceback."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong (or worth a warning) in an input file, located precisely."""

    file: str
    path: str  # object and field, e.g. "inbound_trunks[support].numbers[1]"
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.path}" if self.path else self.file
        return f"{where}: {self.message}"


class ConfigError(TrunklineError):
    """An input file is invalid; every problem found is listed, nothing was changed."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class UsageError(TrunklineError):
    """Missing or contradictory options (exit 2, nothing was changed)."""
