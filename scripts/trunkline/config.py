"""Input files: load YAML, resolve ``${ENV_VAR}`` references, read fields.

Secrets are referenced, never written in a file: ``auth_password:
${CARRIER_PASSWORD}`` is resolved from the environment at load time. ``$${``
writes a literal ``${``.

``FieldReader`` is how every input file (telephony.yml, cxml.yml) is read into
typed values: each problem names the file, the object and the field, and all
of them are collected before anything is reported, so one run shows
everything to fix.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from trunkline.errors import ConfigError, Problem
from trunkline.numbers import normalize_e164

_REF = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
REF_ONLY = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")
# Whole seconds for LiveKit's durations; fractions (and bounds) for timeouts.
DURATION = re.compile(r"^(\d+)(s|m|h)?$")
SECONDS = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)?$")
_UNIT = {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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
            interpolate(v, env, file, f"{path}[{label(v, i)}]", problems)
            for i, v in enumerate(value)
        ]
    if isinstance(value, dict):
        return {k: interpolate(v, env, file, join(path, k), problems) for k, v in value.items()}
    return value


def label(item: Any, index: int) -> str | int:
    """Objects in lists are named by their `name` where they have one."""
    if isinstance(item, dict) and isinstance(item.get("name"), str):
        return item["name"]
    return index


def join(path: str, key: Any) -> str:
    """``object.field``: the location of ``key`` in the object at ``path``."""
    return ".".join(str(p) for p in (path, key) if p != "")


_FIELD = object()  # FieldReader.child(): the object is the field itself


class FieldReader:
    """Reads one object of an input file into typed values.

    A getter that finds a problem records it, located by file, object and field,
    and returns a harmless default instead of raising; ``done()`` reports every
    field no getter read as unknown. ``data`` holds the object with its
    ${VAR} references resolved, ``raw`` the same object as written (``secret``
    checks that a reference, not a value, was written there).

    The two file formats differ in three details, named by the keyword options
    (cxml.yml sets all three, telephony.yml none); ``child`` readers inherit them:

    ``blank_is_missing``
        a field written as "" counts as not given; otherwise it is the empty string
    ``null_is_empty``
        an object written as null reads as empty; otherwise it is "not a mapping"
    ``one_problem_per_field``
        only the first problem of a field is recorded (an unset ${VAR} is not
        also "is required")
    """

    def __init__(
        self,
        file: str,
        path: str,
        data: Any,
        problems: list[Problem],
        raw: Any = _FIELD,
        *,
        blank_is_missing: bool = False,
        null_is_empty: bool = False,
        one_problem_per_field: bool = False,
    ):
        self.file, self.path, self.problems = file, path, problems
        self.options = {
            "blank_is_missing": blank_is_missing,
            "null_is_empty": null_is_empty,
            "one_problem_per_field": one_problem_per_field,
        }
        if not isinstance(data, dict) and not (data is None and null_is_empty):
            self.fail("", f"must be a mapping, not {type(data).__name__}")
        self.data: dict = data if isinstance(data, dict) else {}
        raw = data if raw is _FIELD else raw
        self.raw: dict = raw if isinstance(raw, dict) else {}
        self.seen: set[str] = set()

    def child(self, key: str, data: Any = _FIELD, raw: Any = _FIELD) -> FieldReader:
        """A reader for the object at ``key``: the field ``key`` of this object,
        or ``data`` (as written: ``raw``), e.g. a list item at ``routes[0]``."""
        if data is _FIELD:
            data, raw = self.get(key), self.raw.get(key)
        return FieldReader(
            self.file, join(self.path, key), data, self.problems, raw, **self.options
        )

    # ------------------------------------------------------------ problems
    def fail(self, key: str, message: str) -> None:
        """Record a problem with the field ``key`` ("": the object itself)."""
        where = join(self.path, key)
        if self.options["one_problem_per_field"] and any(
            p.path == where and p.file == self.file for p in self.problems
        ):
            return
        self.problems.append(Problem(self.file, where, message))

    def skip(self, *keys: str) -> None:
        """Take these fields as read: they are judged elsewhere, or cannot be now."""
        self.seen.update(keys)

    def done(self, unknown: str = "is not a known field") -> None:
        """Report every field no getter read."""
        for key in self.data:
            if key not in self.seen:
                self.fail(str(key), unknown)

    # ------------------------------------------------------------ getters
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

    def mapping(self, key: str) -> dict:
        value = self.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(key, f"must be a mapping, not {type(value).__name__}")
            return {}
        return value

    def str(
        self,
        key: str,
        default: str = "",
        *,
        required: bool = False,
        pattern: re.Pattern | None = None,
        what: str = "",
    ) -> str:
        """A string (a number is taken as its digits), matching ``pattern`` if given."""
        value = self.get(key)
        if value is None or (value == "" and self.options["blank_is_missing"]):
            if required:
                self.fail(key, "is required")
            return default
        if not isinstance(value, str | int) or isinstance(value, bool):
            self.fail(key, f"must be a string, not {type(value).__name__}")
            return default
        text = str(value)
        if pattern is not None and not pattern.match(text):
            self.fail(key, f"{text!r} is not {what or 'valid here'}")
            return default
        return text

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.str(key, default)
        if value not in choices:
            self.fail(key, f"must be one of {', '.join(choices)} (not {value!r})")
            return default
        return value

    def bool(self, key: str, default: bool = False) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, not {value!r}")
            return default
        return value

    def secret(self, key: str, required: bool = False) -> str:
        """A secret: only a ${ENV_VAR} reference may be written in the file."""
        value = self.str(key, required=required)
        written = self.raw.get(key)
        literal = isinstance(written, str | int) and not isinstance(written, bool)
        if literal and written != "" and not REF_ONLY.match(str(written)):
            self.fail(key, "must be a ${ENV_VAR} reference: secrets are never written in the file")
            return ""
        return value

    def e164(self, key: str, value: Any) -> str:
        """``value`` (e.g. an item of a list field, ``key`` ``numbers[0]``) as an
        E.164 number, or "" once the reason it is not one is recorded."""
        try:
            return normalize_e164(value if isinstance(value, str) else str(value))
        except ValueError as exc:
            self.fail(key, str(exc))
            return ""

    def numbers(self, key: str) -> tuple[str, ...]:
        """A list of distinct E.164 numbers."""
        out = [
            n for i, value in enumerate(self.list(key)) if (n := self.e164(f"{key}[{i}]", value))
        ]
        for dup in sorted({n for n in out if out.count(n) > 1}):
            self.fail(key, f"{dup} is listed twice")
        return tuple(out)

    def networks(self, key: str) -> tuple[Network, ...]:
        """A list of IP addresses and CIDRs."""
        out = []
        for i, value in enumerate(self.list(key)):
            try:
                out.append(ipaddress.ip_network(str(value), strict=False))
            except ValueError:
                self.fail(f"{key}[{i}]", f"{value!r} is not an IP address or CIDR")
        return tuple(out)

    def pairs(
        self, key: str, key_pattern: re.Pattern | None = None, what: str = ""
    ) -> tuple[tuple[str, str], ...]:
        """A mapping of strings to strings as sorted pairs; keys match ``key_pattern``."""
        out = []
        for k, v in self.mapping(key).items():
            if key_pattern is not None and not key_pattern.match(str(k)):
                self.fail(f"{key}.{k}", f"is not {what}")
            if not isinstance(v, str | int) or isinstance(v, bool):
                self.fail(f"{key}.{k}", f"must be a string, not {type(v).__name__}")
                continue
            out.append((str(k), str(v)))
        return tuple(sorted(out))

    def duration(self, key: str) -> int:
        """Whole seconds, written 30, 30s, 5m or 1h; 0 when not given."""
        value = self.get(key)
        if value is None:
            return 0
        match = DURATION.match(str(value)) if isinstance(value, str | int) else None
        if not match or isinstance(value, bool):
            self.fail(key, f"must be a duration like 30, 30s, 5m or 1h (not {value!r})")
            return 0
        return int(match.group(1)) * _UNIT[match.group(2)]

    def seconds(self, key: str, default: float, low: float, high: float) -> float:
        """Seconds between ``low`` and ``high``, written 30, 30s, 500ms or 1m."""
        value = self.get(key)
        if value is None:
            return default
        match = SECONDS.match(str(value)) if isinstance(value, str | int | float) else None
        if not match or isinstance(value, bool):
            self.fail(key, f"must be a duration like 30, 30s, 500ms or 1m (not {value!r})")
            return default
        result = float(match.group(1)) * _UNIT[match.group(2)]
        if not low <= result <= high:
            self.fail(key, f"must be between {low:g} s and {high:g} s (not {result:g} s)")
            return default
        return result


def environment() -> dict[str, str]:
    return dict(os.environ)
