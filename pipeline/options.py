"""Option sets: each is one ``Literal`` type or one ``Enum``, and :func:`choice` is the one check
that refuses a value outside it (with a message that lists the choices)."""

from __future__ import annotations

import enum
from typing import Any, Literal, get_args

from .errors import ConfigError


def _is_enum(options: Any) -> bool:
    return isinstance(options, type) and issubclass(options, enum.Enum)


def choices(options: Any) -> tuple[str, ...]:
    """The values of an option set: a ``Literal`` type or a ``str`` ``Enum`` class."""
    if _is_enum(options):
        return tuple(member.value for member in options)
    return get_args(options)


def choice(name: str, value: Any, options: Any) -> Any:
    """``value`` checked against ``options``: the Enum member for an Enum class, else the value.

    Raises:
        ConfigError: ``"<name> must be one of 'a', 'b'; got 'c'"``.
    """
    allowed = choices(options)
    if isinstance(value, enum.Enum):
        value = value.value
    if value in allowed:
        return options(value) if _is_enum(options) else value
    raise ConfigError(f"{name} must be one of {', '.join(repr(a) for a in allowed)}; got {value!r}")


Target = Literal["top1", "label"]
"""The class a dataset run explains: the model's prediction, or the folder's ground-truth class."""
