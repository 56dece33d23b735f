"""Saliency maps made by other tools: where they are, which image each belongs to, and reading one.

Three layouts are understood by :func:`open_maps` (``MAPS`` of ``perturb import``):

* **a folder** of ``.npy`` files or PNGs, each named like its image with the extension swapped:
  the map of ``n01440764/img.JPEG`` is ``n01440764/img.npy`` (or ``.png``), or
  ``n01440764/img.JPEG.npy`` with the image's extension kept. PNGs are greyscale, 8 or 16 bit (PIL
  modes ``1``, ``L``, ``I;16``, ``I``, ``F``): a colour PNG is a rendering, not the map's values, and is
  refused. Files with other extensions are ignored (and counted);
* **one ``.npz``** archive (``numpy.savez``) whose keys are the images' relative paths, with or
  without the extension (``n01440764/img.JPEG`` or ``n01440764/img``);
* **one HDF5 file** (``.h5``, ``.hdf5``) with a dataset ``path`` ``(N,)`` of strings (relative
  paths, with or without the extension) and a dataset ``maps`` ``(N, ...)`` of numbers: row ``i`` is
  the map of ``path[i]``.

Only the names are listed when a source is opened; each map is read when it is asked for
(:meth:`MapSource.read`), so a dataset's maps never all sit in memory.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

import numpy as np

from ..errors import ConfigError, PipelineError

__all__ = ["MAP_SUFFIXES", "MapReadError", "MapSource", "MapMatch", "match_maps", "open_maps"]

MAP_SUFFIXES: tuple[str, ...] = (".npy", ".png")
"""File extensions (lower case) taken as maps in a folder."""

_PNG_MODES = {"1", "L", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}  # greyscale: one value per pixel


class MapReadError(PipelineError):
    """One map cannot be used; ``reason`` is the short code stored as the image's skip reason."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


class MapSource:
    """The maps of one folder, ``.npz`` or HDF5 file (context manager).

    Attributes:
        path: the source as given. kind: ``"folder"``, ``"npz"`` or ``"hdf5"``.
        keys: every map's key (a relative path with or without the image's extension, POSIX
            separators), sorted.
        ignored: files of a folder that are not maps (other extensions), counted.
    """

    def __init__(self, path: Path, kind: str, keys: Iterable[str], ignored: int = 0):
        self.path, self.kind, self.keys, self.ignored = path, kind, sorted(keys), ignored

    def read(self, key: str) -> np.ndarray:
        """The map stored under ``key``, as stored (any dtype and shape).

        Raises:
            MapReadError: reason ``"map unreadable"``: not an array file, a pickled object, a
                colour PNG, or an I/O error.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release open files (a folder holds none)."""

    def __enter__(self) -> MapSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Folder(MapSource):
    def __init__(self, path: Path):
        files: dict[str, str] = {}
        ignored = 0
        base = os.path.abspath(path)
        for folder, dirs, names in os.walk(base, followlinks=True):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in names:
                stem, suffix = os.path.splitext(name)
                if name.startswith("."):
                    continue
                if suffix.lower() not in MAP_SUFFIXES:
                    ignored += 1
                    continue
                relative = Path(os.path.relpath(os.path.join(folder, name), base)).as_posix()
                key = relative[: -len(suffix)]
                if key in files:
                    raise ConfigError(f"maps folder {str(path)!r} has two maps for {key!r} ({files[key]} and "
                                      f"{relative}); keep one")
                files[key] = relative
        self._files = files
        super().__init__(path, "folder", files, ignored)

    def read(self, key: str) -> np.ndarray:
        file = Path(self.path) / self._files[key]
        if file.suffix.lower() == ".png":
            return _read_png(file)
        try:
            return np.load(file, allow_pickle=False)
        except Exception as error:  # numpy raises ValueError, OSError, EOFError... for a non-array file
            raise MapReadError("map unreadable", f"{self._files[key]}: not a .npy array ({_first_line(error)})") \
                from None


def _read_png(file: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(file) as image:
            if image.mode not in _PNG_MODES:
                raise MapReadError("map unreadable", f"{file.name}: a {image.mode} PNG (colour) is a rendering, "
                                   "not a map; save maps as greyscale 8- or 16-bit PNGs or .npy")
            return np.asarray(image)
    except MapReadError:
        raise
    except Exception as error:  # PIL's errors for a file that is not a PNG or is cut short
        raise MapReadError("map unreadable", f"{file.name}: not a readable PNG ({_first_line(error)})") from None


class _Npz(MapSource):
    def __init__(self, path: Path):
        try:
            self._archive = np.load(path, allow_pickle=False)
        except Exception as error:
            raise ConfigError(f"maps file {str(path)!r} is not an .npz archive ({_first_line(error)}); save it "
                              "with numpy.savez(path, **{relative_path: map})") from None
        if not isinstance(self._archive, np.lib.npyio.NpzFile):
            raise ConfigError(f"maps file {str(path)!r} holds one array, not an .npz archive keyed by image path")
        super().__init__(path, "npz", self._archive.files)

    def read(self, key: str) -> np.ndarray:
        try:
            return self._archive[key]
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
            raise MapReadError("map unreadable", f"{key}: {_first_line(error)}") from None

    def close(self) -> None:
        self._archive.close()


class _Hdf5(MapSource):
    def __init__(self, path: Path):
        import h5py

        try:
            self._file = h5py.File(path, "r")
        except OSError as error:
            raise ConfigError(f"maps file {str(path)!r} is not a readable HDF5 file ({_first_line(error)})") from None
        try:
            keys = self._index(path)
        except BaseException:
            self._file.close()
            raise
        super().__init__(path, "hdf5", keys)

    def _index(self, path: Path) -> list[str]:
        file = self._file
        present = sorted(file.keys())
        if "path" not in file or "maps" not in file or not all(hasattr(file[n], "shape") for n in ("path", "maps")):
            raise ConfigError(f"maps file {str(path)!r} needs datasets 'path' (N,) of relative paths and 'maps' "
                              f"(N, ...) of numbers; it has {present}")
        paths, maps = file["path"], file["maps"]
        if paths.ndim != 1 or maps.ndim < 3 or len(paths) != len(maps):
            raise ConfigError(f"maps file {str(path)!r}: 'path' must be (N,) and 'maps' (N, ...) with one map per "
                              f"path; got {paths.shape} and {maps.shape}")
        names = [v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else str(v) for v in paths[()]]
        seen: dict[str, int] = {}
        for row, name in enumerate(names):
            if name in seen:
                raise ConfigError(f"maps file {str(path)!r} lists {name!r} twice (rows {seen[name]} and {row})")
            seen[name] = row
        self._rows = seen
        return names

    def read(self, key: str) -> np.ndarray:
        try:
            return np.asarray(self._file["maps"][self._rows[key]])
        except (OSError, ValueError, TypeError) as error:
            raise MapReadError("map unreadable", f"{key}: {_first_line(error)}") from None

    def close(self) -> None:
        self._file.close()


def open_maps(path: str | os.PathLike[str]) -> MapSource:
    """List the maps of a folder, ``.npz`` or HDF5 file (see the module docstring); nothing is read.

    Raises:
        ConfigError: ``path`` is missing or of none of the three kinds, the archive or HDF5 file
            cannot be read or lacks its datasets, or two maps claim the same key.
    """
    source = Path(path).expanduser()
    if source.is_dir():
        return _Folder(source)
    if not source.is_file():
        raise ConfigError(f"maps {str(source)!r} do not exist; pass a folder of .npy or .png maps, an .npz or an "
                          "HDF5 file")
    suffix = source.suffix.lower()
    if suffix == ".npz":
        return _Npz(source)
    if suffix in (".h5", ".hdf5"):
        return _Hdf5(source)
    raise ConfigError(f"maps {str(source)!r} must be a folder of .npy or .png maps, an .npz archive or an HDF5 file "
                      "(.h5, .hdf5)")


@dataclass
class MapMatch:
    """Which map each image has: ``keys`` maps an image's relative path to its map's key; images
    absent from it have none. ``unmatched`` lists the maps of no image (sorted)."""

    keys: dict[str, str] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)


def match_maps(map_keys: Iterable[str], relpaths: Iterable[str]) -> MapMatch:
    """Pair images with maps: image ``cls/img.JPEG`` takes key ``cls/img.JPEG``, else ``cls/img``.

    Raises:
        ConfigError: an image has both keys, or two images (``a.jpg``, ``a.png``) the same one;
            naming the first few.
    """
    available = set(map_keys)
    match = MapMatch()
    owner: dict[str, str] = {}
    clashes: list[str] = []
    for relpath in relpaths:
        stem = str(PurePosixPath(relpath).with_suffix("")) if PurePosixPath(relpath).suffix else relpath
        found = [k for k in dict.fromkeys((relpath, stem)) if k in available]
        if len(found) > 1:
            clashes.append(f"{relpath!r} has two maps ({found[0]!r} and {found[1]!r})")
            continue
        if not found:
            continue
        if found[0] in owner:
            clashes.append(f"map {found[0]!r} fits {owner[found[0]]!r} and {relpath!r}")
            continue
        owner[found[0]] = relpath
        match.keys[relpath] = found[0]
    if clashes:
        more = f" (and {len(clashes) - 3} more)" if len(clashes) > 3 else ""
        raise ConfigError(f"maps are ambiguous: {'; '.join(clashes[:3])}{more}; name each map after its image "
                          "with the image's extension (img.JPEG.npy)")
    match.unmatched = sorted(available - set(owner))
    return match


def _first_line(error: Any) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0][:160]
