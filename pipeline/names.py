"""File names taken from the data: how the store keeps them and how reports show them.

POSIX file names are bytes. Python gives a name that is not valid UTF-8 (``caf\\xe9.JPEG``, as
Latin-1 systems write it) as a ``str`` holding lone surrogates (``'caf\\udce9.JPEG'``, PEP 383,
what :func:`os.fsdecode` returns); such a ``str`` cannot be encoded as UTF-8 text.

* **In the store** a name is kept exactly: valid UTF-8 as the UTF-8 string it is (every store
  written before this module existed), any other name as its raw bytes (:func:`stored_name`).
  Readers decode with ``surrogateescape`` (:data:`READ_ERRORS`), which gives back the ``str``
  Python's own file functions take, so ``root / path`` re-opens the file.
* **In text outputs** (CSV, Parquet, JSON, Markdown, HTML, plot titles) a name is shown by
  :func:`display_name`: undecodable bytes become ``\\xNN``. The shown form is for people; the
  store keeps the exact one.
* **Markdown and HTML** written by the tool escape every name and label taken from the data
  (:func:`markdown_text`, :func:`html_text`), so a file or folder name cannot inject markup.
"""

from __future__ import annotations

import html
import re

__all__ = ["READ_ERRORS", "stored_name", "display_name", "markdown_text", "markdown_code", "html_text"]

READ_ERRORS = "surrogateescape"
"""The ``errors`` with which the store's string columns are decoded (see the module docstring)."""


def stored_name(name: str) -> str | bytes:
    """``name`` as the store writes it: the ``str`` itself when it is valid Unicode, else the bytes
    the file system has (:func:`os.fsencode`'s ``surrogateescape`` on UTF-8).

    Raises:
        UnicodeEncodeError: ``name`` holds a lone surrogate that does not stand for a byte
            (``U+D800..U+DC7F``, ``U+DD00..U+DFFF``): no file system gives such a name.
    """
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return name.encode("utf-8", READ_ERRORS)


def display_name(name: str) -> str:
    """``name`` as valid text: bytes that are not UTF-8 shown as ``\\xNN`` (``'caf\\\\xe9.JPEG'``);
    valid names are returned unchanged."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return name.encode("utf-8", READ_ERRORS).decode("utf-8", "backslashreplace")


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+\-.!|~&])")


def markdown_text(text: str) -> str:
    """``text`` (a name from the data) safe inside Markdown prose and table cells: every character
    Markdown or inline HTML could read as syntax is backslash-escaped, line breaks become spaces."""
    flat = display_name(str(text)).replace("\r", " ").replace("\n", " ")
    return _MARKDOWN_SPECIAL.sub(r"\\\1", flat)


def markdown_code(text: str) -> str:
    """``text`` (a name from the data) as a Markdown code span that shows it literally: fenced by
    one backtick more than its longest run of backticks, ``|`` escaped for table cells (GitHub's
    tables split cells on it even inside code), line breaks as spaces."""
    flat = display_name(str(text)).replace("\r", " ").replace("\n", " ").replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall("`+", flat)), default=0) + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


def html_text(text: str) -> str:
    """``text`` (a name from the data) safe as HTML text or a quoted attribute value."""
    return html.escape(display_name(str(text)), quote=True)
