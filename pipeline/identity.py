"""The identity of a configuration: what makes two runs the same run.

A configuration is a mapping of plain values (or a dataclass instance, read as its fields). Its
identity is :func:`run_key`, 16 hex digits hashing its values after one normalisation: numbers
are compared as JSON compares them, so a whole-number float and the integer it equals (``4.0``
and ``4``) are the same value, tuples are lists, Enums their values, paths strings. Every part of
the package that asks "was this made with the same configuration?" (a store being resumed, a shard
joining its run, an evaluation being reused) compares :func:`run_key`.

A mapping may carry a top-level :data:`PROVENANCE` entry: how the configuration was named (the
preset and the overrides it was given). It is recorded with the output but is never part of the
identity, so ``-p paper-fast`` and ``-p paper`` with ``paper-fast``'s differences as overrides are
one run.

:func:`flatten` gives the dotted-key view of a nested configuration that differences
(:func:`config_diff`), provenance tables and preset matching all use.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
import os
from typing import Any, Mapping

from .errors import ConfigError

__all__ = ["PROVENANCE", "canonical_json", "config_diff", "flatten", "identity", "provenance", "run_key"]

PROVENANCE = "provenance"
"""Top-level key of a configuration mapping whose value (``{"preset": str, "overrides": [str]}``)
says how the configuration was named; recorded, never hashed."""

_EXACT_INTEGERS = 2.0**53  # floats beyond this are not all integers exactly


def identity(config: Any) -> dict[str, Any]:
    """The part of ``config`` that identifies a run: the mapping without :data:`PROVENANCE`.

    Raises:
        ConfigError: ``config`` is neither a mapping nor a dataclass instance.
    """
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    if not isinstance(config, Mapping):
        raise ConfigError(f"config must be a dict of settings, got {type(config).__name__}")
    return {key: value for key, value in config.items() if key != PROVENANCE}


def provenance(config: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`PROVENANCE` entry of ``config`` (empty when absent)."""
    value = config.get(PROVENANCE) if isinstance(config, Mapping) else None
    return dict(value) if isinstance(value, Mapping) else {}


def _plain(value: Any) -> Any:
    """``json.dumps`` fallback for the types configurations commonly hold."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # numpy scalars and arrays
        return value.tolist()
    raise TypeError(f"{type(value).__name__} value {value!r}")


def _normalised(value: Any) -> Any:
    """``value`` with every number in one form: a finite whole-number float as the int it equals."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        whole = math.isfinite(value) and value.is_integer() and abs(value) < _EXACT_INTEGERS
        return int(value) if whole else value
    if isinstance(value, Mapping):
        return {key: _normalised(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalised(item) for item in value]
    try:
        return _normalised(_plain(value))
    except TypeError:
        return value  # json.dumps then says what it cannot represent


def _dumps(config: Mapping[str, Any]) -> str:
    try:
        return json.dumps(dict(config), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_plain)
    except (TypeError, ValueError) as error:
        raise ConfigError(
            f"config cannot be stored as JSON ({error}); use str, numbers, bools, lists and dicts"
        ) from None


def canonical_json(config: Any) -> str:
    """The configuration as recorded: JSON of :func:`identity` with sorted keys and no spaces
    (tuples become lists; numbers are written as given, so a float field reads back a float).

    Raises:
        ConfigError: ``config`` is not a mapping or holds a value JSON cannot represent.
    """
    return _dumps(identity(config))


def run_key(config: Any) -> str:
    """16 hex digits identifying a configuration: the first of the SHA-256 of :func:`identity`
    as canonical JSON with its numbers normalised (``4`` and ``4.0`` hash the same).

    Raises:
        ConfigError: ``config`` is not a mapping or holds a value JSON cannot represent.
    """
    text = _dumps(_normalised(identity(config)))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as one level with dotted keys: ``{"a": {"b": 1}}`` -> ``{"a.b": 1}``.

    An empty nested mapping is kept as the value ``{}`` (an empty top level gives ``{}``);
    anything else, lists included, is a value.
    """
    if not isinstance(value, Mapping) or (not value and prefix):
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        flat.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def config_diff(stored: Mapping[str, Any], requested: Mapping[str, Any], limit: int = 6) -> str:
    """``key: file X, now Y`` for the dotted keys whose values differ (as :func:`run_key` compares
    them), ``; ``-joined; at most ``limit`` of them."""
    old, new = flatten(identity(stored)), flatten(identity(requested))
    missing = object()

    def differs(key: str) -> bool:
        return _normalised(old.get(key, missing)) != _normalised(new.get(key, missing))

    lines = [
        f"{key}: file {json.dumps(old.get(key, missing), default=lambda _: '<absent>')}, "
        f"now {json.dumps(new.get(key, missing), default=lambda _: '<absent>')}"
        for key in sorted(old.keys() | new.keys()) if differs(key)
    ]
    more = f" (and {len(lines) - limit} more)" if len(lines) > limit else ""
    return "; ".join(lines[:limit]) + more
