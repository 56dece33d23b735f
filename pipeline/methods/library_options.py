"""Options passed through to another library's call (Captum, pytorch-grad-cam, TorchRay).

A library method's options are read from its constructor's and ``attribute()``'s signatures
(:func:`signature_defaults`), so the names users type are the library's own, and checked in one
place (:func:`merge_options`): an unknown name is one :class:`~pipeline.errors.ConfigError` that
lists the valid ones, and a string from the command line (``--opt n_steps=32``) becomes the type of
the option's default.
"""

from __future__ import annotations

import ast
import inspect
from typing import Any, Callable, Iterable, Mapping

from ..errors import ConfigError

__all__ = ["coerce", "merge_options", "signature_defaults"]

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def signature_defaults(functions: Iterable[Callable], skip: Iterable[str] = ()) -> dict[str, Any]:
    """The keyword parameters of ``functions`` and their defaults, in signature order.

    ``self``, ``*args``/``**kwargs`` and the names in ``skip`` (tensors the method supplies itself:
    inputs, target, ...) are left out; a parameter without a default gets None.
    """
    skip = set(skip) | {"self"}
    found: dict[str, Any] = {}
    for function in functions:
        for name, parameter in inspect.signature(function).parameters.items():
            if name in skip or name in found or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                continue
            found[name] = None if parameter.default is parameter.empty else parameter.default
    return found


def coerce(name: str, value: Any, default: Any) -> Any:
    """``value`` as the type of ``default`` when it is a string from the command line.

    ``"true"``/``"false"`` for a bool, ``"32"`` for an int, ``"0.1"`` for a float, ``"3,16,16"`` or
    ``"(3, 16, 16)"`` for a tuple; for a None default, a Python literal where the string is one
    (``"64"`` -> 64, ``"None"`` -> None) and the string itself otherwise. Non-strings pass unchanged.

    Raises:
        ConfigError: a string that is not of the default's type.
    """
    if not isinstance(value, str) or isinstance(default, str):
        return value
    text = value.strip()
    try:
        if isinstance(default, bool):
            if text.lower() in _TRUE | _FALSE:
                return text.lower() in _TRUE
            raise ValueError(text)
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, tuple):
            parsed = ast.literal_eval(text if text.startswith("(") else f"({text},)")
            return tuple(parsed) if isinstance(parsed, (tuple, list)) else (parsed,)
    except (ValueError, SyntaxError) as error:
        kind = type(default).__name__
        raise ConfigError(f"option {name}={value!r} is not a {kind} (default {default!r})") from error
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def merge_options(method: str, given: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``defaults`` updated with ``given`` (each coerced to its default's type).

    Raises:
        ConfigError: a name not in ``defaults``: ``"<method> has no option 'x'; options: a, b"``.
    """
    unknown = [name for name in given if name not in defaults]
    if unknown:
        raise ConfigError(f"{method} has no option {', '.join(repr(u) for u in unknown)}; options: "
                          f"{', '.join(defaults) or '(none)'}")
    merged = dict(defaults)
    merged.update({name: coerce(name, value, defaults[name]) for name, value in given.items()})
    return merged
