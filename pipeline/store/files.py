"""The files of a mask store on disk: opening HDF5 with clear errors, the writer's POSIX lock,
``fsync``, temporary names, shard file names, and the part files (``<path>.parts/NNNNNNNNN.h5``,
one committed batch each): listing, reading, opening and checking that they follow on.

A store is ``<path>`` plus the parts numbered above its ``parts_merged`` attribute; docs/store.md
explains why batches are committed as parts and folded in later.
"""

from __future__ import annotations

import errno
import os
from contextlib import suppress
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one writer per store is then the user's care
    fcntl = None  # type: ignore[assignment]

from ..errors import ConfigError, StoreError
from ..names import READ_ERRORS

__all__ = [
    "HELD_LOCKS", "open_h5", "lock_store", "unlock_store", "store_locked", "fsync", "temporary_path", "shard_path",
    "check_shard", "parts_dir", "part_number", "live_parts", "read_parts", "open_part", "check_contiguous",
]

HELD_LOCKS: set[str] = set()
"""Real paths of the lock files this process holds (see :func:`lock_store`)."""


def open_h5(path: Path, mode: str) -> h5py.File:
    """Open an HDF5 file, turning lock and format failures into StoreError sentences."""
    try:
        return h5py.File(path, mode)
    except OSError as error:
        text = str(error).lower()
        if "unable to lock" in text:  # not "sblock", which HDF5's truncation message holds
            raise StoreError(
                f"{str(path)!r} is locked by another process that has it open for writing; wait "
                "for it to finish or choose another --out"
            ) from None
        if "truncated file" in text:
            raise StoreError(
                f"mask store {str(path)!r} is damaged: the file is shorter than HDF5 recorded "
                f"({error}), e.g. a copy or transfer that did not finish; copy it again from where "
                "it came from, or run the masks again with --overwrite (a cut removes the metadata "
                "HDF5 keeps at the end of the file, so its rows cannot be recovered)"
            ) from None
        raise StoreError(
            f"cannot open {str(path)!r} as an HDF5 mask store ({error}); pass --overwrite to "
            "replace it or choose another --out"
        ) from None


# --------------------------------------------------------------------------------------------
# the writer's lock


def _lock_path(store: Path) -> Path:
    return store.with_name(store.name + ".lock")


def lock_store(store: Path) -> int | None:
    """Hold an exclusive POSIX lock on ``<store>.lock``: one writer per store. Returns the
    descriptor (None where ``fcntl`` is missing, e.g. Windows: no lock).

    ``lockf`` rather than ``flock``: forked children (DataLoader workers) do not inherit it, so a
    killed run's surviving workers cannot lock out its resume. The lock file is deleted by the
    writer that holds it; a writer that locked a file deleted meanwhile sees a different inode at
    the path and tries again.

    Raises:
        StoreError: another writer holds the store, or its folder cannot be written.
    """
    _writable(store, lambda: store.parent.mkdir(parents=True, exist_ok=True))
    path = _lock_path(store)
    busy = StoreError(
        f"mask store {str(store)!r} is being written by another process (is another run using "
        "the same --out?); wait for it to finish or choose another --out"
    )
    # POSIX locks belong to a process: a second writer in this process would be granted the lock,
    # and closing its descriptor would drop the first writer's. So this process keeps a list.
    key = os.path.realpath(path)
    if key in HELD_LOCKS:
        raise busy
    if fcntl is None:
        HELD_LOCKS.add(key)
        return None
    for _ in range(100):
        descriptor = _writable(store, lambda: os.open(path, os.O_RDWR | os.O_CREAT, 0o644))
        try:
            fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(descriptor)
            raise busy from None
        with suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(descriptor).st_ino:
                HELD_LOCKS.add(key)
                return descriptor
        os.close(descriptor)
    raise StoreError(f"could not lock {str(path)!r}; retry")


def _writable(store: Path, action: Any) -> Any:
    """``action()``, with a read-only folder or file system said as what it is."""
    try:
        return action()
    except OSError as error:
        if error.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        raise StoreError(
            f"mask store {str(store)!r} cannot be written here ({error.strerror}: "
            f"{error.filename!r}); it can still be read (inspect, evaluate, export): to resume or "
            "add to it, copy it with its .parts folder to a writable place"
        ) from None


def unlock_store(store: Path, descriptor: int | None) -> None:
    """Release what :func:`lock_store` returned, deleting the lock file."""
    path = _lock_path(store)
    HELD_LOCKS.discard(os.path.realpath(path))
    if descriptor is None:
        return
    with suppress(OSError):
        path.unlink()  # while still locked: see lock_store
    os.close(descriptor)


def store_locked(store: Path) -> bool:
    """Whether a writer (this process's or another's) holds ``store``'s lock (:func:`lock_store`)."""
    path = _lock_path(store)
    if os.path.realpath(path) in HELD_LOCKS:  # ours: probing would release it (POSIX locks are per process)
        return True
    if fcntl is None:  # no advisory locks: a lock file is all there is to go by
        return path.exists()
    try:
        descriptor = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.lockf(descriptor, fcntl.LOCK_UN)
        return False
    finally:
        os.close(descriptor)


# --------------------------------------------------------------------------------------------
# names and durability


def fsync(path: Path) -> None:
    """Flush a file's (or a folder's) data to disk, so a rename after it is durable."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        if path.is_dir():  # folders cannot be opened on Windows; nothing to flush there
            return
        raise
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def temporary_path(path: Path) -> Path:
    """``<path>.tmp``: where a file is written before the rename that commits it."""
    return path.with_name(path.name + ".tmp")


def check_shard(shard: Sequence[int]) -> tuple[int, int]:
    """``(rank, world)`` as ints.

    Raises:
        ConfigError: not two ints with ``0 <= rank < world``.
    """
    try:
        rank, world = (int(v) for v in shard)
    except (TypeError, ValueError):
        rank, world = -1, -1
    if not 0 <= rank < world:
        raise ConfigError(f"shard must be (rank, world) with 0 <= rank < world, got {shard!r}")
    return rank, world


def shard_path(path: str | os.PathLike[str], rank: int, world: int) -> Path:
    """``<stem>.shard-{rank}-of-{world}.h5`` next to ``path``: the file rank ``rank`` writes."""
    check_shard((rank, world))
    path = Path(path)
    return path.with_name(f"{path.stem}.shard-{rank}-of-{world}.h5")


# --------------------------------------------------------------------------------------------
# parts: the batches committed since the store file was last rewritten


def parts_dir(path: str | os.PathLike[str]) -> Path:
    """The folder of a store's committed batches not yet folded into it: ``<path>.parts``."""
    path = Path(path)
    return path.with_name(path.name + ".parts")


def part_number(part: Path) -> int:
    """The commit number of a part, from its name ``NNNNNNNNN.h5``."""
    return int(part.stem)


def live_parts(path: Path, merged: int, clean: bool = False) -> list[Path]:
    """The part files of the store ``path`` not yet folded into it (numbered above ``merged``),
    in commit order. With ``clean``, delete what kills left: unfinished ``.tmp`` parts and parts
    already folded in (a kill between a fold's rename and its deletion of the parts)."""
    folder = parts_dir(path)
    if not folder.is_dir():
        return []
    live = []
    for entry in folder.iterdir():
        name = entry.name.removesuffix(".tmp")
        if not (name.endswith(".h5") and name[:-3].isdigit()):
            continue  # not a part, nor a part being written
        if name == entry.name and int(name[:-3]) > merged:
            live.append(entry)
        elif clean:
            entry.unlink(missing_ok=True)
    return sorted(live, key=part_number)


def read_parts(parts: list[Path], raw: bool = False) -> dict[str, np.ndarray]:
    """Every dataset of the parts, concatenated in order: ``mask`` ``(n, K, h, w)`` float16, the
    columns ``(n,)`` (str columns as object arrays of str, or with ``raw`` of the stored bytes,
    which a fold writes back unchanged)."""
    pieces: dict[str, list[np.ndarray]] = {}
    for part in parts:
        with open_part(part) as file:
            for name, dataset in file.items():
                string = h5py.check_string_dtype(dataset.dtype) is not None and not raw
                pieces.setdefault(name, []).append(
                    dataset.asstr(errors=READ_ERRORS)[:] if string else dataset[:])
    return {name: np.concatenate(values) for name, values in pieces.items()}


def open_part(part: Path) -> h5py.File:
    """A committed part, read-only.

    Raises:
        FileNotFoundError: the part was deleted meanwhile (by a fold): the caller retries.
        StoreError: the part is damaged; the message says how to recover.
    """
    try:
        return h5py.File(part, "r")
    except FileNotFoundError:
        raise
    except OSError as error:
        if not part.exists():  # HDF5 reports a part deleted between listing and opening as a
            raise FileNotFoundError(part) from None  # failed stat, not as a missing file
        store = part.parent.with_name(part.parent.name.removesuffix(".parts"))
        raise StoreError(
            f"batch file {str(part)!r} of mask store {str(store)!r} is damaged ({error}); run "
            f"`perturb repair {store}` to set it aside and keep every other row"
        ) from None


def check_contiguous(path: Path, merged: int, parts: list[Path]) -> None:
    """Parts are numbered one after the other from ``parts_merged + 1``; a gap means the file and
    its ``.parts`` folder were not taken at the same moment (e.g. copied while a run folded), and
    reading them together would silently lose the batches of the gap.

    Raises:
        StoreError: there is a gap.
    """
    numbers = [part_number(p) for p in parts]
    expected = list(range(merged + 1, merged + 1 + len(numbers)))
    if numbers != expected:
        missing = sorted(set(range(merged + 1, max(numbers, default=merged) + 1)) - set(numbers))
        raise StoreError(
            f"mask store {str(path)!r} does not match its batch folder: the file holds the "
            f"batches up to {merged} but {str(parts_dir(path))!r} lacks batch(es) {missing[:5]} "
            "before the ones it has (was it copied while a run was writing it?); copy it again "
            f"once the run has ended, or run `perturb repair {path}` to keep the rows that are there"
        )
