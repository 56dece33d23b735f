"""Sharded mask runs on disk: one resumable store per shard, a plan they share, and the merge.

A run split into ``N`` shards (:mod:`pipeline.distributed`) writes, next to ``--out``::

    <out>.shards/run.json                      the plan every shard must agree with
    <out>.shards/<stem>.shard-<r>-of-<N>.h5    shard r's store (a MaskWriter store: its own
                                               .parts/ and .lock, the same crash safety)

``run.json`` (:class:`ShardPlan`) records ``N``, the number of images in the input list and a
hash of their paths, and the run's configuration (its ``run_key``). The first shard to start
writes it (an atomic create: concurrent starters agree on one file), every other shard compares
itself with it, so a shard started with another ``N``, another data list (or ``--limit``) or
another configuration is refused with one line. Each shard knows how many images it must hold
(``len(range(r, images, N))``), so completeness is a count, and :func:`merge_run` refuses to
merge while a shard is missing or unfinished, naming them.

The merged store (:func:`pipeline.store.merge_shards`) holds the rows of all shards sorted by
``index`` (the order a one-process run without early stopping commits them), with the same
configuration, model, source and mask shape as a one-process store of the same images. Once it
is written, the shard folder is deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..distributed import Shard, process_group_barrier, restart_count
from ..errors import StoreError
from .files import HELD_LOCKS, parts_dir, shard_path
from .merge import merge_shards
from .reader import MaskStore
from .schema import canonical_json, config_diff, run_key

__all__ = ["PLAN_FILE", "ShardPlan", "ShardState", "ShardedRun", "shards_dir", "shard_store_path",
           "data_list_hash", "claim_file", "read_plan", "shard_states", "merge_run", "progress_lines"]

PLAN_FILE = "run.json"
"""The plan's file name inside ``<out>.shards/``."""


def shards_dir(out: str | os.PathLike[str]) -> Path:
    """``<out>.shards``: the folder of a sharded run's per-shard stores and plan."""
    out = Path(out)
    return out.with_name(out.name + ".shards")


def shard_store_path(out: str | os.PathLike[str], rank: int, world: int) -> Path:
    """Shard ``rank`` of ``world``'s store: ``<out>.shards/<stem>.shard-<rank>-of-<world>.h5``."""
    out = Path(out)
    return shard_path(shards_dir(out) / out.name, rank, world)


def data_list_hash(relpaths: Sequence[str]) -> str:
    """16 hex digits of the SHA-256 of the input list (relative paths in index order)."""
    digest = hashlib.sha256()
    for relpath in relpaths:
        digest.update(relpath.encode("utf-8", "surrogateescape") + b"\n")
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class ShardPlan:
    """What every shard of one run agrees on (``<out>.shards/run.json``).

    Attributes:
        world: the number of shards ``N``.
        images: the number of images in the whole input list.
        data_hash: :func:`data_list_hash` of that list.
        run_key: the store configuration's key (:func:`pipeline.store.run_key`).
        config: that configuration.
        model: the model spec.
    """

    world: int
    images: int
    data_hash: str
    run_key: str
    config: Mapping[str, Any]
    model: str

    def expected(self, rank: int) -> int:
        """How many images shard ``rank`` must hold: ``len(range(rank, images, world))``."""
        return len(range(rank, self.images, self.world))

    def to_json(self) -> str:
        return json.dumps({"version": 1, **asdict(self), "config": json.loads(canonical_json(self.config))},
                          sort_keys=True, indent=1) + "\n"

    @classmethod
    def from_file(cls, path: Path) -> ShardPlan:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(int(data["world"]), int(data["images"]), str(data["data_hash"]),
                       str(data["run_key"]), dict(data["config"]), str(data["model"]))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise StoreError(f"cannot read the shard plan {str(path)!r} ({error}); pass --overwrite to "
                             "start the sharded run again") from None


def read_plan(out: str | os.PathLike[str]) -> ShardPlan | None:
    """The plan of the sharded run writing into ``out``, or None when there is none."""
    path = shards_dir(out) / PLAN_FILE
    return ShardPlan.from_file(path) if path.is_file() else None


def _write_plan(folder: Path, plan: ShardPlan, replace: bool) -> ShardPlan:
    """Write ``plan`` unless one exists (``replace``: always); returns the plan on disk."""
    path = folder / PLAN_FILE
    return plan if claim_file(path, plan.to_json(), replace) else ShardPlan.from_file(path)


def claim_file(path: Path, text: str, replace: bool = False) -> bool:
    """Write ``text`` to ``path`` unless the file exists (``replace``: always), atomically: a
    reader never sees half a file, and of concurrent writers exactly one creates it. Returns
    whether this call wrote it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    try:
        if replace:
            os.replace(temporary, path)
            return True
        try:
            os.link(temporary, path)  # atomic create-if-absent
        except FileExistsError:
            return False
        return True
    finally:
        temporary.unlink(missing_ok=True)


def _check_plan(stored: ShardPlan, mine: ShardPlan, shard: Shard, where: Path) -> None:
    """Refuse, with one line, a shard that does not belong to the run in ``where``."""
    again = "or pass --overwrite to start the sharded run again"
    if stored.world != mine.world:
        raise StoreError(f"{str(where)!r} holds a run split into {stored.world} shards, but this process is "
                         f"{shard.label} (from {shard.launcher}): run {stored.world} shards (--shard "
                         f"I/{stored.world}), {again}")
    if (stored.images, stored.data_hash) != (mine.images, mine.data_hash):
        raise StoreError(f"this process lists {mine.images} images (list hash {mine.data_hash}), but the "
                         f"sharded run in {str(where)!r} was started on {stored.images} (hash "
                         f"{stored.data_hash}): give every shard the same data and --limit, {again}")
    if stored.run_key != mine.run_key or stored.model != mine.model:
        diff = config_diff(dict(stored.config), dict(mine.config))
        raise StoreError(f"this process's configuration differs from the sharded run in {str(where)!r} "
                         f"(run_key {stored.run_key} vs {mine.run_key}; {diff}): give every shard the "
                         f"same options, {again}")


@dataclass(frozen=True)
class ShardState:
    """How far one shard is.

    Attributes:
        rank: the shard. expected: images it must hold. done: rows committed (0 when missing).
        state: ``"complete"``, ``"running"`` (its writer holds the lock), ``"stopped"`` (started,
            not finished, nobody writing: rerun its command) or ``"missing"`` (never started).
        path: its store file.
    """

    rank: int
    expected: int
    done: int
    state: str
    path: Path


def _locked(store: Path) -> bool:
    """Whether another process holds the writer lock of ``store`` (see :func:`pipeline.store.files.lock_store`)."""
    lock = store.with_name(store.name + ".lock")
    if os.path.realpath(lock) in HELD_LOCKS:  # ours: probing would release it (POSIX locks are per process)
        return True
    try:
        import fcntl
    except ImportError:  # no advisory locks: a lock file is all there is to go by
        return lock.exists()
    try:
        descriptor = os.open(lock, os.O_RDWR)
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


def shard_states(out: str | os.PathLike[str]) -> tuple[ShardPlan, list[ShardState]]:
    """The plan of the sharded run into ``out`` and the state of each of its shards.

    Raises:
        StoreError: there is no sharded run for ``out``, or a shard's store belongs to another run.
    """
    plan = read_plan(out)
    if plan is None:
        raise StoreError(f"no sharded run writes into {str(out)!r} ({str(shards_dir(out) / PLAN_FILE)!r} "
                         "is missing); start one with --shard I/N, torchrun or a Slurm array")
    states = []
    for rank in range(plan.world):
        path = shard_store_path(out, rank, plan.world)
        expected = plan.expected(rank)
        if not path.is_file():
            states.append(ShardState(rank, expected, 0, "running" if _locked(path) else "missing", path))
            continue
        with MaskStore(path) as store:
            _check_store(store, plan)
            done = len(store)
        state = "complete" if done >= expected else "running" if _locked(path) else "stopped"
        states.append(ShardState(rank, expected, done, state, path))
    return plan, states


def _check_store(store: MaskStore, plan: ShardPlan) -> None:
    """A shard store must have been made for ``plan`` (it records the plan when created)."""
    recorded = store.attrs.get("shard_plan")
    mine = _plan_key(plan)
    if store.run_key != plan.run_key or (recorded is not None and recorded != mine):
        raise StoreError(f"the shard store {str(store.path)!r} was made for another run than "
                         f"{str(store.path.parent / PLAN_FILE)!r} describes; pass --overwrite to start "
                         "the sharded run again")


def _plan_key(plan: ShardPlan) -> str:
    return hashlib.sha256(plan.to_json().encode("utf-8")).hexdigest()[:16]


def progress_lines(out: str | os.PathLike[str]) -> list[str]:
    """Per-shard progress of the sharded run into ``out``, for ``perturb inspect``."""
    plan, states = shard_states(out)
    done = sum(min(s.done, s.expected) for s in states)
    lines = [f"sharded    {plan.world} shards in {shards_dir(out)}/, {done} of {plan.images} images done "
             f"(not merged into {out} yet)",
             f"model      {plan.model}"]
    for s in states:
        lines.append(f"  shard {s.rank}/{plan.world}  {s.done:>6} of {s.expected:<6} {s.state}")
    waiting = [s for s in states if s.state != "complete"]
    lines.append("next       " + (f"`perturb merge {out}`" if not waiting else
                                  "rerun the unfinished shards (the same command resumes them), then "
                                  f"`perturb merge {out}`"))
    lines.append("config     " + json.dumps(dict(plan.config), sort_keys=True))
    return lines


def merge_run(out: str | os.PathLike[str], overwrite: bool = False, keep_shards: bool = False) -> Path:
    """Merge the complete shards of the run into ``out`` and delete ``<out>.shards/``.

    Raises:
        StoreError: no sharded run, a shard missing or unfinished (named), a shard of another
            run, or ``out`` exists and not ``overwrite``.
    """
    out = Path(out)
    plan, states = shard_states(out)
    unfinished = [s for s in states if s.state != "complete"]
    if unfinished:
        which = "; ".join(f"shard {s.rank}: {s.state}" + ("" if s.state == "missing" else
                          f", {s.done} of {s.expected} images") for s in unfinished[:8])
        more = f" (and {len(unfinished) - 8} more)" if len(unfinished) > 8 else ""
        raise StoreError(f"cannot merge {str(out)!r}: {len(unfinished)} of {plan.world} shards are not complete "
                         f"({which}{more}); run them (the same command resumes them), then merge again")
    if out.exists() and not overwrite:
        raise StoreError(f"{str(out)!r} exists; pass --overwrite to replace it with the merge of "
                         f"{str(shards_dir(out))!r}")
    merge_shards([s.path for s in states], out, overwrite=overwrite)
    if not keep_shards:
        shutil.rmtree(shards_dir(out), ignore_errors=True)
    return out


class ShardedRun:
    """One shard's part of a sharded mask run (what :func:`pipeline.jobs.run.run_store` does with it).

    :meth:`prepare` checks the shard against the run's plan (writing the plan when first) and
    against an existing ``out``; :attr:`path`, :attr:`indices` and :attr:`attrs` are then what
    this process's :class:`~pipeline.store.MaskWriter` writes; :meth:`finish` waits for the
    other ranks under torchrun and merges on rank 0.
    """

    def __init__(self, out: Path, shard: Shard, plan: ShardPlan, overwrite: bool, merged: bool):
        self.out, self.shard, self.plan, self.overwrite = out, shard, plan, overwrite
        self.merged = merged
        self.path = shard_store_path(out, shard.rank, shard.world)
        self.indices = shard.indices(plan.images)
        self.attrs = {"shard_plan": _plan_key(plan), "shard_images": str(len(self.indices))}

    @classmethod
    def prepare(cls, out: str | os.PathLike[str], shard: Shard, relpaths: Sequence[str],
                config: Mapping[str, Any], model: str, overwrite: bool) -> ShardedRun:
        """Check (and on first start record) the plan for this shard of the run into ``out``.

        ``overwrite`` starts the whole sharded run again, except in a worker torchrun has
        restarted (``TORCHELASTIC_RESTART_COUNT > 0``), which resumes: its first start already
        replaced what was there.

        Raises:
            StoreError: the shard disagrees with the run's plan (``N``, data list or
                configuration), or ``out`` holds another store (and not ``overwrite``).
        """
        out = Path(out)
        plan = ShardPlan(shard.world, len(relpaths), data_list_hash(relpaths), run_key(config),
                         json.loads(canonical_json(config)), str(model))
        overwrite = overwrite and restart_count() == 0
        if not overwrite and out.exists():
            if _merged_store_holds(out, plan, relpaths):
                if shard.rank == 0:  # a merge killed while deleting the shards: finish the tidying
                    shutil.rmtree(shards_dir(out), ignore_errors=True)
                return cls(out, shard, plan, overwrite, merged=True)
            raise StoreError(f"{str(out)!r} already exists and is not this run's complete merged store; a "
                             "sharded run writes <out>.shards/ and merges into --out at the end: pass "
                             "--overwrite to replace it, or choose another --out")
        folder = shards_dir(out)
        stored = _write_plan(folder, plan, replace=overwrite)
        if overwrite and shard.rank == 0:
            _remove_other_worlds(out, plan.world)
            # The old --out goes now, not at the merge: a later resume without --overwrite must
            # not mistake it for this run's result (or refuse to start because of it).
            out.unlink(missing_ok=True)
            shutil.rmtree(parts_dir(out), ignore_errors=True)
        else:
            _check_plan(stored, plan, shard, folder)
        run = cls(out, shard, plan, overwrite, merged=False)
        if not overwrite and run.path.is_file():
            with MaskStore(run.path) as store:
                _check_store(store, plan)
        return run

    def finish(self) -> list[str]:
        """After this shard's store is complete: under torchrun wait for every rank, then rank 0
        merges into ``out``; elsewhere say how the shards are merged. Returns lines to print."""
        if process_group_barrier(self.shard):
            if self.shard.rank != 0:
                return [f"{self.shard.label} done; rank 0 merges the shards into {self.out}"]
            merge_run(self.out, overwrite=self.out.exists())
            return [f"merged {self.plan.world} shards into {self.out} ({self.plan.images} images)"]
        _, states = shard_states(self.out)
        waiting = [str(s.rank) for s in states if s.state != "complete"]
        if waiting:
            return [f"{self.shard.label} done; waiting for shards {', '.join(waiting)} of {self.plan.world}, "
                    f"then `perturb merge {self.out}`"]
        return [f"all {self.plan.world} shards are complete: `perturb merge {self.out}` writes {self.out}"]


def _merged_store_holds(out: Path, plan: ShardPlan, relpaths: Sequence[str]) -> bool:
    """Whether ``out`` is a store of this configuration holding every image of the list."""
    try:
        with MaskStore(out) as store:
            if store.run_key != plan.run_key or len(store) != plan.images:
                return False
            index, paths = store.column("index"), store.column("path")
    except StoreError:
        return False
    return sorted(index.tolist()) == list(range(plan.images)) and all(
        relpaths[int(i)] == str(p) for i, p in zip(index, paths))


def _remove_other_worlds(out: Path, world: int) -> None:
    """Delete the shard stores (with their parts and locks) of an earlier split into another N."""
    folder, stem = shards_dir(out), out.stem
    for entry in folder.glob(f"{stem}.shard-*-of-*.h5*"):
        name = entry.name.split(".h5", 1)[0]
        if name.rsplit("-of-", 1)[-1] != str(world):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
