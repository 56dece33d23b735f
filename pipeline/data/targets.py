"""Per-image classes to explain, read from a CSV file (``--targets FILE.csv``).

The file has a header row with the columns ``path`` and ``class`` (others are ignored):

* ``path``: the image's path relative to the data folder, as :func:`pipeline.data.discover` lists
  it (POSIX separators; a leading ``./`` is dropped), e.g. ``n01440764/ILSVRC2012_val_00000293.JPEG``;
* ``class``: the class explained, as a class index (``0``), a wnid (``n01440764``) or a class name
  (``tench``), resolved by :meth:`pipeline.imagenet.ClassVocabulary.resolve`.

:func:`read_targets` checks the whole file against the images before anything is loaded: every
image of the run (the first ``limit`` when given) has one row, every row names an image of the
folder, every class is known, no path has two rows. Whatever is wrong is one
:class:`~pipeline.errors.ConfigError` listing the first few cases of each kind.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import torch

from ..errors import ConfigError
from .discover import discover

if TYPE_CHECKING:
    from ..imagenet import ClassVocabulary

__all__ = ["TargetTable", "read_targets"]

_SHOWN = 3  # cases listed per kind of problem


@dataclass(frozen=True)
class TargetTable:
    """The class explained for each image.

    Attributes:
        source: the CSV file as given.
        classes: relative path -> class index (every image of the run, and possibly more).
        digest: SHA-256 of the resolved table (canonical JSON of ``classes`` sorted by path): the
            table's identity in a store's configuration, so another table is another run while the
            same classes written as wnids or as indices are the same run.
    """

    source: str
    classes: Mapping[str, int] = field(hash=False, repr=False)
    digest: str = ""

    def __post_init__(self) -> None:
        if not self.digest:
            text = json.dumps(sorted(self.classes.items()), separators=(",", ":"))
            object.__setattr__(self, "digest", hashlib.sha256(text.encode()).hexdigest())

    def lookup(self, relpaths: Sequence[str]) -> torch.Tensor:
        """``(b,)`` int64: the class of each of ``relpaths``.

        Raises:
            ConfigError: a path has no row (the table was read for other images).
        """
        missing = [p for p in relpaths if p not in self.classes]
        if missing:
            raise ConfigError(f"targets file {self.source!r} has no row for {_first(missing)}")
        return torch.tensor([self.classes[p] for p in relpaths], dtype=torch.int64)


def read_targets(path: str | Path, source: str | Path, vocabulary: ClassVocabulary | None = None,
                 limit: int | None = None) -> TargetTable:
    """Read and check the targets file ``path`` for the images under ``source``.

    Args:
        path: the CSV file (module docstring).
        source: the images, as :func:`pipeline.data.discover` takes them.
        vocabulary: resolves the ``class`` column; ImageNet-1k by default (the built-in models'),
            so nothing waits for a model.
        limit: the run's ``--limit``: only its first ``limit`` images need a row.

    Raises:
        ConfigError: the file is missing or unreadable, lacks the columns, or any image has no row,
            row names no image, class is unknown or path has two rows (one message, first few of each).
        ImageReadError: ``source`` is missing or holds no image.
    """
    if vocabulary is None:
        from ..imagenet import imagenet_vocabulary

        vocabulary = imagenet_vocabulary()
    name = str(path)
    rows = _read_rows(Path(path))
    records = discover(source, vocabulary)
    images = {r.relpath for r in records}
    problems: list[str] = []
    seen: dict[str, int] = {}
    twice, stray = [], []
    unknown: dict[str, list[int]] = {}  # class text -> its lines
    classes: dict[str, int] = {}
    resolved: dict[str, int | str] = {}  # class text -> index, or the error
    for line, relpath, text in rows:
        if relpath in seen:
            twice.append(f"{relpath} (lines {seen[relpath]} and {line})")
            continue
        seen[relpath] = line
        if relpath not in images:
            stray.append(f"{relpath} (line {line})")
        if text not in resolved:
            try:
                resolved[text] = vocabulary.resolve(text)
            except ConfigError as error:
                resolved[text] = str(error)
        if isinstance(resolved[text], str):
            unknown.setdefault(text, []).append(line)
        else:
            classes[relpath] = resolved[text]
    needed = records if limit is None else records[:limit]
    unlisted = [r.relpath for r in needed if r.relpath not in seen]
    unknown_cases = [f"{text!r} ({_lines(lines)}{_hint(str(resolved[text]))})" for text, lines in unknown.items()]
    for cases, what in ((unlisted, "image has no row" if len(unlisted) == 1 else "images have no row"),
                        (stray, "row names no image" if len(stray) == 1 else "rows name no image"),
                        (unknown_cases, "unknown class" if len(unknown) == 1 else "unknown classes"),
                        (twice, "path has two rows" if len(twice) == 1 else "paths have two rows")):
        if cases:
            problems.append(f"{len(cases)} {what}: {_first(cases)}")
    if problems:
        raise ConfigError(f"targets file {name!r}: " + "; ".join(problems))
    return TargetTable(name, classes)


def _read_rows(path: Path) -> list[tuple[int, str, str]]:
    """``(line number, path, class)`` of each data row, paths in discover's form."""
    if not path.is_file():
        raise ConfigError(f"targets file {str(path)!r} does not exist; give a CSV with the columns path,class")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, skipinitialspace=True)
            columns = [c.strip() for c in reader.fieldnames or []]
            if "path" not in columns or "class" not in columns:
                raise ConfigError(f"targets file {str(path)!r} needs a header row with the columns path,class; "
                                  f"it has {','.join(columns) or 'none'}")
            reader.fieldnames = columns
            rows = []
            for row in reader:
                relpath = (row.get("path") or "").strip().replace("\\", "/")
                while relpath.startswith("./"):
                    relpath = relpath[2:]
                text = (row.get("class") or "").strip()
                if relpath or text:  # blank lines
                    rows.append((reader.line_num, relpath, text))
    except (UnicodeDecodeError, csv.Error) as error:
        raise ConfigError(f"targets file {str(path)!r} is not a readable CSV: {error}") from None
    if not rows:
        raise ConfigError(f"targets file {str(path)!r} has no rows")
    return rows


def _lines(lines: list[int]) -> str:
    return f"line {lines[0]}" if len(lines) == 1 else f"{len(lines)} rows from line {lines[0]}"


def _hint(message: str) -> str:
    """The "did you mean" part of :meth:`ClassVocabulary.resolve`'s error, when it has one."""
    return "; " + message.split("; ", 1)[1] if "; did you mean" in message else ""


def _first(cases: list[str]) -> str:
    more = f" (and {len(cases) - _SHOWN} more)" if len(cases) > _SHOWN else ""
    return ", ".join(cases[:_SHOWN]) + more
