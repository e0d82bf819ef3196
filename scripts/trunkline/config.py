"""Load YAML input files and resolve ``${ENV_VAR}`` references.

Secrets are referenced, never written in a file: ``auth_password:
${CARRIER_PASSWORD}`` is resolved from the environment at load time. ``$${``
writes a literal ``${``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from trunkline.errors import ConfigError, Problem

_REF = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
REF_ONLY = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")


def load_yaml(path: str | Path) -> Any:
    """Parse a YAML file; a missing file or a syntax error is a ConfigError naming it."""
    name = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError([Problem(name, "", f"cannot read: {exc.strerror}")]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([Problem(name, where, f"invalid YAML: {reason}")]) from None


def interpolate(value: Any, env: Mapping[str, str], file: str, path: str, problems: list) -> Any:
    """Resolve ``${VAR}`` in every string of ``value``; unknown variables are problems."""
    if isinstance(value, str):

        def repl(match: re.Match) -> str:
            if match.group(0) == "$${":
                return "${"
            var = match.group(1)
            if var not in env:
                problems.append(Problem(file, path, f"environment variable {var} is not set"))
                return ""
            return env[var]

        return _REF.sub(repl, value)
    if isinstance(value, list):
        return [
            interpolate(v, env, file, f"{path}[{_label(v, i)}]", problems)
            for i, v in enumerate(value)
        ]
    if isinstance(value, dict):
        return {k: interpolate(v, env, file, f"{path}.{k}", problems) for k, v in value.items()}
    return value


def _label(item: Any, index: int) -> str | int:
    """Objects in lists are named by their `name` where they have one."""
    if isinstance(item, dict) and isinstance(item.get("name"), str):
        return item["name"]
    return index


class FieldReader:
    """The part every input file's field reader shares: it reads one object's
    fields, remembers which it read, and reports the rest as unknown. Subclasses
    decide how a problem is located and recorded (``fail``) and how values are typed."""

    data: dict
    seen: set[str]

    def fail(self, key: str, message: str) -> None:
        raise NotImplementedError

    def get(self, key: str, default: Any = None) -> Any:
        self.seen.add(key)
        return self.data.get(key, default)

    def list(self, key: str) -> list:
        value = self.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(key, f"must be a list, not {type(value).__name__}")
            return []
        return value

    def done(self) -> None:
        for key in self.data:
            if key not in self.seen:
                self.fail(str(key), "is not a known field")


def environment() -> dict[str, str]:
    return dict(os.environ)
