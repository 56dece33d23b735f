"""Finding the images of a dataset: an ImageNet-style folder, a flat folder, or a file list,
and each image's label (the model's class index of its wnid folder)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING


from ..errors import ConfigError, ImageReadError

if TYPE_CHECKING:
    from ..imagenet import ClassVocabulary

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
)
"""File extensions (lower case) taken as images when a folder is scanned."""


@dataclass(frozen=True)
class ImageRecord:
    """One image of a dataset.

    Attributes:
        path: absolute path of the file (symlinks are not resolved).
        relpath: path relative to the source folder (the folder given to :func:`discover`, or the
            folder of a file list or single image), POSIX separators; for a file list, the line
            as written. This is the row key stored in a mask store's ``path`` column.
        label: the model's class index, -1 when unknown.
    """

    path: Path
    relpath: str
    label: int = -1



def discover(
    source: str | os.PathLike[str],
    vocabulary: ClassVocabulary | None = None,
    limit: int | None = None,
) -> list[ImageRecord]:
    """List the images of a dataset in a deterministic order (sorted by ``relpath``).

    Args:
        source: a folder (ImageNet-style ``root/<wnid>/<image>``, flat, or a mix: images directly
            in ``root`` get label -1), a text file listing image paths one per line (relative
            paths are resolved against the file's folder; blank lines and lines starting with
            ``#`` are ignored; every listed path is taken, unreadable ones are recorded later),
            or a single image file.
        vocabulary: maps the wnid naming an image's parent folder to the model's index;
            defaults to ImageNet-1k (:func:`pipeline.imagenet.imagenet_vocabulary`, loaded only
            when some image sits in a subfolder). A parent folder whose name is not a known
            wnid gives label -1. In a file list the listed path's parent folder is used the
            same way (``n01440764/x.JPEG`` gets label 0).
        limit: keep only the first ``limit`` images (after sorting).

    Folders are scanned recursively, following symbolic links; hidden files and folders (names
    starting with ``.``) are skipped, and images are recognised by :data:`IMAGE_EXTENSIONS`
    (case-insensitive).

    Raises:
        ImageReadError: the source does not exist or holds no images.
        ConfigError: ``limit`` is not positive, or a file list names a path twice.
    """
    if limit is not None and (isinstance(limit, bool) or int(limit) < 1):
        raise ConfigError(f"limit must be a positive number of images or None, got {limit!r}")
    source = Path(source).expanduser()
    if not source.exists():
        raise ImageReadError(
            f"image source {str(source)!r} does not exist; pass an ImageNet-style folder, "
            "a folder of images or a text file listing image paths"
        )
    if source.is_dir():
        pairs = _scan_folder(source)
        kind = f"folder {str(source)!r} holds no images (extensions {_extension_list()})"
    elif source.suffix.lower() in IMAGE_EXTENSIONS:
        pairs = [(Path(os.path.abspath(source)), source.name)]
        kind = ""
    else:
        pairs = _read_file_list(source)
        kind = f"file list {str(source)!r} names no images (all lines blank or comments)"
    if not pairs:
        raise ImageReadError(f"image {kind}; check the path")
    pairs.sort(key=lambda pair: pair[1])
    if limit is not None:
        pairs = pairs[: int(limit)]
    return _label(pairs, vocabulary)


def _extension_list() -> str:
    return ", ".join(sorted(ext.lstrip(".") for ext in IMAGE_EXTENSIONS))


def _scan_folder(folder: Path) -> list[tuple[Path, str]]:
    """``(absolute path, relpath)`` of every image file below ``folder``."""
    found = []
    base = os.path.abspath(folder)
    for folder, dirs, files in os.walk(base, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                continue
            full = os.path.join(folder, name)
            found.append((Path(full), Path(os.path.relpath(full, base)).as_posix()))
    return found


def _read_file_list(listing: Path) -> list[tuple[Path, str]]:
    """``(absolute path, line as written)`` for every path a text file lists."""
    try:
        text = listing.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as error:
        raise ImageReadError(
            f"cannot read {str(listing)!r} as a UTF-8 text file listing image paths ({error}); "
            "pass a folder, an image, or a text file with one image path per line"
        ) from None
    base = Path(os.path.abspath(listing.parent))
    seen: dict[str, int] = {}
    pairs = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if entry in seen:
            raise ConfigError(
                f"file list {str(listing)!r} names {entry!r} twice (lines {seen[entry]} and "
                f"{number}); remove the duplicate so each image has one row"
            )
        seen[entry] = number
        path = Path(entry).expanduser()
        pairs.append((Path(os.path.abspath(path if path.is_absolute() else base / path)), entry))
    return pairs


def _label(
    pairs: list[tuple[Path, str]], vocabulary: ClassVocabulary | None
) -> list[ImageRecord]:
    """Attach labels from the parent folder name of each relpath (-1 when none or unknown)."""
    needs_labels = any("/" in relpath for _, relpath in pairs)
    if needs_labels and vocabulary is None:
        from ..imagenet import imagenet_vocabulary  # timm import, only when folders need labels

        vocabulary = imagenet_vocabulary()
    index = vocabulary.index_of_wnid if needs_labels and vocabulary is not None else {}
    records = []
    for path, relpath in pairs:
        parent = relpath.rsplit("/", 2)[-2] if "/" in relpath else ""
        records.append(ImageRecord(path=path, relpath=relpath, label=index.get(parent, -1)))
    return records
