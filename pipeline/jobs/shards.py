"""Sharded runs: ``N`` processes each write one shard of an output, and the shards merge into it.

Shard ``r`` of ``N`` (:mod:`pipeline.distributed`) takes the images whose ``index`` has
``index % N == r``. Two kinds of output are sharded, by one protocol:

``masks`` (:class:`MaskShard`: ``perturb masks`` and ``perturb baseline``)
    ``<out>.shards/<stem>.shard-<r>-of-<N>.h5``: shard ``r``'s resumable mask store (its own
    ``.parts/`` and ``.lock``), merged by :func:`pipeline.store.merge_shards` into a store equal
    to a one-process store of the same images (rows sorted by ``index``).
``evaluate`` (:class:`EvaluationShard`: ``perturb evaluate``)
    ``<report>.shards/shard-<r>-of-<N>/``: shard ``r``'s evaluation folder (tables, summary,
    curves; no plots), finished when it holds ``done.json``; merged by
    :func:`pipeline.evaluation.merge_evaluations` into the report one process writes, with its
    ``report.html``.

The protocol (:class:`ShardedJob`):

1. **Plan.** ``<out>.shards/run.json`` (:class:`ShardPlan`) records the kind of output, ``N``
   and what every shard must agree on (the data list and configuration; the store and
   evaluation settings). The first shard to start writes it (an atomic create: concurrent
   starters agree on one file); every other shard compares itself with it and is refused with
   one line when it differs.
2. **Restart.** ``overwrite`` starts the whole sharded run again: the plan is replaced, and rank
   0 deletes the shards of an earlier split into another ``N`` (for masks, also the old
   ``out``). A worker that torchrun restarted (``TORCHELASTIC_RESTART_COUNT > 0``) resumes
   instead: its first start already replaced what was there.
3. **Finish.** Under torchrun every rank waits at a barrier and rank 0 merges; elsewhere the
   shard says which shards are still missing and that ``perturb merge`` merges them.
4. **Merge** (:func:`merge_run`, ``perturb merge``): reads the kind from the plan, refuses while
   a shard is incomplete (naming them), merges, and deletes ``<out>.shards/``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

import numpy as np

from ..distributed import Shard, process_group_barrier, restart_count
from ..errors import StoreError
from ..store import MaskStore, canonical_json, config_diff, merge_shards, parts_dir, run_key, shard_path, store_locked
from .reports import report_line, write_run_report

if TYPE_CHECKING:  # evaluation is imported where an evaluation is sharded: `perturb masks` needs none of it
    from ..evaluation import EvalConfig

__all__ = ["PLAN_FILE", "ShardPlan", "ShardState", "ShardedJob", "MaskShard", "EvaluationShard", "MergeResult",
           "shards_dir", "claim_file", "data_list_hash", "read_plan", "shard_states", "progress_lines",
           "merge_run"]

PLAN_FILE = "run.json"
"""The plan's file name inside ``<out>.shards/``."""

MASKS, EVALUATION = "masks", "evaluate"
"""The kinds of sharded output (:attr:`ShardPlan.kind`)."""


def shards_dir(out: str | os.PathLike[str]) -> Path:
    """``<out>.shards``: the folder of a sharded run's shards and plan."""
    out = Path(out)
    return out.with_name(out.name + ".shards")


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


def data_list_hash(relpaths: Sequence[str]) -> str:
    """16 hex digits of the SHA-256 of the input list (relative paths in index order)."""
    digest = hashlib.sha256()
    for relpath in relpaths:
        digest.update(relpath.encode("utf-8", "surrogateescape") + b"\n")
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# the plan and the state of each shard


@dataclass(frozen=True)
class ShardPlan:
    """What every shard of one run agrees on (``<out>.shards/run.json``).

    Attributes:
        kind: the output, ``"masks"`` or ``"evaluate"`` (a plan written before the kind was
            recorded is a mask run's).
        world: the number of shards ``N``.
        facts: what a shard must match, by kind. ``masks``: ``images`` (the number of images in
            the input list), ``data_hash`` (:func:`data_list_hash`), ``run_key``, ``config``
            (the store configuration) and ``model``. ``evaluate``: ``store`` (its resolved path),
            ``store_run_key``, ``store_rows``, ``config`` (the evaluation settings), ``boxes``
            and ``data_root``.
    """

    kind: str
    world: int
    facts: Mapping[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.facts[name]

    def _record(self) -> dict[str, Any]:
        return {"version": 1, "world": self.world, **self.facts}

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, **self._record()}, sort_keys=True, indent=1) + "\n"

    @property
    def key(self) -> str:
        """16 hex digits identifying the plan, recorded in each shard's store. The kind is left
        out: mask plans written before it was recorded keep their key (and their shards)."""
        text = json.dumps(self._record(), sort_keys=True, indent=1) + "\n"
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    @classmethod
    def from_file(cls, path: Path) -> ShardPlan:
        """The plan in ``path``.

        Raises:
            StoreError: unreadable, or lacking what its kind records.
        """
        kind = MASKS
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            kind = str(data.get("kind", MASKS))
            facts = {name: data[name] for name in _KINDS[kind].facts}
            return cls(kind, int(data["world"]), facts)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            again = _KINDS.get(kind, MaskShard).again(path.parent)
            raise StoreError(f"cannot read the shard plan {str(path)!r} ({error}); {again}") from None


def read_plan(out: str | os.PathLike[str]) -> ShardPlan | None:
    """The plan of the sharded run writing into ``out``, or None when there is none."""
    path = shards_dir(out) / PLAN_FILE
    return ShardPlan.from_file(path) if path.is_file() else None


@dataclass(frozen=True)
class ShardState:
    """How far one shard is.

    Attributes:
        rank: the shard. expected: images it must hold. done: images it holds (0 when missing).
        state: ``"complete"``; ``"running"`` (a mask shard whose writer holds the lock);
            ``"stopped"`` (started, not finished, nobody writing: rerun its command); or
            ``"missing"`` (never started).
        path: its output (store file or evaluation folder).
    """

    rank: int
    expected: int
    done: int
    state: str
    path: Path


@dataclass(frozen=True)
class MergeResult:
    """What a merge wrote: ``out`` (and for an evaluation its HTML ``report``)."""

    out: Path
    report: Path | None = None

    def lines(self) -> list[str]:
        """What ``perturb merge`` prints."""
        return [f"merged into {self.out}"] + ([report_line(self.report)] if self.report else [])


@dataclass(frozen=True)
class _Words:
    """The sentences a kind of sharded run says (``str.format`` templates)."""

    noun: str          # what the plan's folder holds: "a run" ...
    again: str         # how to start the sharded run again
    handed_over: str   # a rank other than 0 under torchrun, done
    merged: str        # rank 0 under torchrun, after the merge
    waiting: str       # a shard done, others not
    complete: str      # every shard done, nobody merges (no torchrun)
    incomplete: str    # perturb merge with shards not done


# --------------------------------------------------------------------------------------------
# the protocol


class ShardedJob:
    """One process's shard of a sharded run; subclasses are the kinds of output.

    :meth:`_prepare` (through a subclass's ``prepare``) checks the shard against the run's plan,
    writing the plan when first; :attr:`path` is then what this process writes, and
    :attr:`overwrite` whether it starts its shard again; :meth:`finish` waits for the other
    ranks under torchrun and merges on rank 0 (:attr:`result`: what the merge wrote).
    """

    kind: ClassVar[str]
    facts: ClassVar[tuple[str, ...]]
    words: ClassVar[_Words]

    def __init__(self, out: Path, shard: Shard, plan: ShardPlan, overwrite: bool, merged: bool = False):
        self.out, self.shard, self.plan, self.overwrite, self.merged = out, shard, plan, overwrite, merged
        self.path = self.shard_path(out, shard.rank, shard.world)
        self.result: MergeResult | None = None

    # what each kind defines ------------------------------------------------------------------

    @classmethod
    def shard_path(cls, out: Path, rank: int, world: int) -> Path:
        """Where shard ``rank`` of ``world`` writes."""
        raise NotImplementedError

    @classmethod
    def states(cls, out: Path, plan: ShardPlan) -> list[ShardState]:
        """The state of each shard of ``plan``."""
        raise NotImplementedError

    @classmethod
    def differences(cls, stored: ShardPlan, mine: ShardPlan, folder: Path) -> str | None:
        """Why a shard planning ``mine`` does not belong to the run of ``stored`` (same ``N``)."""
        raise NotImplementedError

    @classmethod
    def stale(cls, out: Path, world: int) -> list[Path]:
        """The shard outputs of an earlier split into another ``N`` than ``world``."""
        raise NotImplementedError

    def _merge(self, overwrite: bool) -> MergeResult:
        """Merge the complete shards into ``out`` (the shard folder is left for the caller)."""
        raise NotImplementedError

    def _done_already(self) -> bool:
        """Whether ``out`` already holds this run's merged output (then nothing is done)."""
        return False

    def _restart(self) -> None:
        """Rank 0 under ``overwrite``: remove what the run wrote before (beyond stale shards)."""

    def _check_own(self) -> None:
        """Refuse this shard's existing output when it was made for another plan."""

    @classmethod
    def again(cls, folder: Path) -> str:
        """How to start this kind of sharded run again (the end of a refusal)."""
        return cls.words.again.format(folder=str(folder))

    # the protocol, the same for every kind ---------------------------------------------------

    @classmethod
    def _prepare(cls, out: Path, shard: Shard, plan: ShardPlan, overwrite: bool, **options: Any) -> ShardedJob:
        """This process's shard of the run into ``out`` described by ``plan``.

        Raises:
            StoreError: the shard disagrees with the run's plan (``N``, data, configuration),
                or with its own earlier output.
        """
        overwrite = overwrite and restart_count() == 0
        job = cls(out, shard, plan, overwrite, **options)
        if not overwrite and job._done_already():
            job.merged = True
            return job
        folder = shards_dir(out)
        path = folder / PLAN_FILE
        stored = plan if claim_file(path, plan.to_json(), replace=overwrite) else ShardPlan.from_file(path)
        if overwrite:
            if shard.rank == 0:
                for entry in cls.stale(out, plan.world):
                    _remove(entry)
                job._restart()
        else:
            _check_plan(cls, stored, plan, shard, folder)
            job._check_own()
        return job

    def finish(self) -> list[str]:
        """After this shard is complete: under torchrun wait for every rank, then rank 0 merges
        into ``out``; elsewhere say what is left. Returns lines to print."""
        words = {"label": self.shard.label, "out": self.out, "world": self.plan.world,
                 "images": self.plan.facts.get("images")}
        if process_group_barrier(self.shard):
            if self.shard.rank != 0:
                return [self.words.handed_over.format(**words)] if self.words.handed_over else []
            self.result = _merge_complete(self, overwrite=self.out.exists())
            page = self.result.report
            return [self.words.merged.format(**words)] + ([report_line(page)] if page else [])
        waiting = [str(s.rank) for s in self.states(self.out, self.plan) if s.state != "complete"]
        if waiting:
            return [self.words.waiting.format(waiting=", ".join(waiting), **words)]
        return [self.words.complete.format(**words)]


def _check_plan(kind: type[ShardedJob], stored: ShardPlan, mine: ShardPlan, shard: Shard, folder: Path) -> None:
    """Refuse, with one line, a shard that does not belong to the run in ``folder``."""
    again = kind.again(folder)
    if stored.kind != mine.kind:
        raise StoreError(f"{str(folder)!r} holds the shards of a sharded {stored.kind!r} run, not of "
                         f"{mine.kind!r}: choose another --out, or {again}")
    if stored.world != mine.world:
        raise StoreError(f"{str(folder)!r} holds {kind.words.noun} split into {stored.world} shards, but this "
                         f"process is {shard.label} (from {shard.launcher}): run {stored.world} shards (--shard "
                         f"I/{stored.world}), or {again}")
    why = kind.differences(stored, mine, folder)
    if why is not None:
        raise StoreError(f"{why}, or {again}")


def _remove(entry: Path) -> None:
    if entry.is_dir():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


def shard_states(out: str | os.PathLike[str]) -> tuple[ShardPlan, list[ShardState]]:
    """The plan of the sharded run into ``out`` and the state of each of its shards.

    Raises:
        StoreError: there is no sharded run for ``out``, or a shard belongs to another run.
    """
    plan = _existing_plan(out)
    return plan, _KINDS[plan.kind].states(Path(out), plan)


def _existing_plan(out: str | os.PathLike[str]) -> ShardPlan:
    plan = read_plan(out)
    if plan is None:
        raise StoreError(f"no sharded run writes into {str(out)!r} ({str(shards_dir(out) / PLAN_FILE)!r} "
                         "is missing); start one with --shard I/N, torchrun or a Slurm array")
    return plan


def progress_lines(out: str | os.PathLike[str]) -> list[str]:
    """Per-shard progress of the sharded run into ``out``, for ``perturb inspect``."""
    plan, states = shard_states(out)
    done = sum(min(s.done, s.expected) for s in states)
    total = sum(s.expected for s in states)
    lines = [f"sharded    {plan.world} shards in {shards_dir(out)}/, {done} of {total} images done "
             f"(not merged into {out} yet)"]
    if "model" in plan.facts:
        lines.append(f"model      {plan['model']}")
    if "store" in plan.facts:
        lines.append(f"store      {plan['store']}")
    for s in states:
        lines.append(f"  shard {s.rank}/{plan.world}  {s.done:>6} of {s.expected:<6} {s.state}")
    waiting = [s for s in states if s.state != "complete"]
    lines.append("next       " + (f"`perturb merge {out}`" if not waiting else
                                  "rerun the unfinished shards (the same command resumes them), then "
                                  f"`perturb merge {out}`"))
    lines.append("config     " + json.dumps(dict(plan["config"]), sort_keys=True))
    return lines


def merge_run(out: str | os.PathLike[str], overwrite: bool = False, keep_shards: bool = False) -> MergeResult:
    """Merge the complete shards of the sharded run into ``out`` (a mask store or an evaluation
    folder, as its plan says) and delete ``<out>.shards/`` (unless ``keep_shards``).

    Raises:
        StoreError: no sharded run, a shard missing or unfinished (named), a shard of another
            run, or (masks) ``out`` exists and not ``overwrite``.
    """
    out = Path(out)
    plan = _existing_plan(out)
    job = _KINDS[plan.kind](out, Shard(), plan, overwrite=False)
    return _merge_complete(job, overwrite, keep_shards)


def _merge_complete(job: ShardedJob, overwrite: bool, keep_shards: bool = False) -> MergeResult:
    states = job.states(job.out, job.plan)
    unfinished = [s for s in states if s.state != "complete"]
    if unfinished:
        which = "; ".join(f"shard {s.rank}: {s.state}" + ("" if s.state == "missing" else
                          f", {s.done} of {s.expected} images") for s in unfinished[:8])
        more = f" (and {len(unfinished) - 8} more)" if len(unfinished) > 8 else ""
        raise StoreError(job.words.incomplete.format(
            out=str(job.out), count=len(unfinished), world=job.plan.world, which=which, more=more,
            ranks=", ".join(str(s.rank) for s in unfinished)))
    merged = job._merge(overwrite)
    if not keep_shards:
        shutil.rmtree(shards_dir(job.out), ignore_errors=True)
    return merged


# --------------------------------------------------------------------------------------------
# mask stores


class MaskShard(ShardedJob):
    """A shard of a mask run (``perturb masks``, ``perturb baseline``): a resumable mask store.

    :attr:`indices` are the positions of its images in the input list, :attr:`attrs` what its
    :class:`~pipeline.store.MaskWriter` records (the plan's key and the images it must hold);
    the writer writes :attr:`writer_path` with ``shard=(rank, world)``, i.e. :attr:`path`.
    """

    kind = MASKS
    facts = ("images", "data_hash", "run_key", "config", "model")
    words = _Words(
        noun="a run",
        again="pass --overwrite to start the sharded run again",
        handed_over="{label} done; rank 0 merges the shards into {out}",
        merged="merged {world} shards into {out} ({images} images)",
        waiting="{label} done; waiting for shards {waiting} of {world}, then `perturb merge {out}`",
        complete="all {world} shards are complete: `perturb merge {out}` writes {out}",
        incomplete="cannot merge {out!r}: {count} of {world} shards are not complete ({which}{more}); run them "
                   "(the same command resumes them), then merge again")

    def __init__(self, out: Path, shard: Shard, plan: ShardPlan, overwrite: bool, merged: bool = False,
                 relpaths: Sequence[str] = ()):
        super().__init__(out, shard, plan, overwrite, merged)
        self.relpaths = relpaths
        self.indices = shard.indices(plan["images"])
        self.attrs = {"shard_plan": plan.key, "shard_images": str(len(self.indices))}
        self.writer_path = shards_dir(out) / out.name  # MaskWriter(shard=...) adds .shard-r-of-n

    @classmethod
    def prepare(cls, out: str | os.PathLike[str], shard: Shard, relpaths: Sequence[str],
                config: Mapping[str, Any], model: str, overwrite: bool) -> MaskShard:
        """Check (and on first start record) the plan for this shard of the mask run into ``out``.

        ``out`` holding this run's complete merged store (a merge killed while deleting the
        shards) is done: :attr:`merged` is set and nothing is left to solve.

        Raises:
            StoreError: the shard disagrees with the run's plan (``N``, data list or
                configuration), or ``out`` holds another store (and not ``overwrite``).
        """
        plan = ShardPlan(MASKS, shard.world, {
            "images": len(relpaths), "data_hash": data_list_hash(relpaths), "run_key": run_key(config),
            "config": json.loads(canonical_json(config)), "model": str(model)})
        return cls._prepare(Path(out), shard, plan, overwrite, relpaths=relpaths)

    @classmethod
    def shard_path(cls, out: Path, rank: int, world: int) -> Path:
        return shard_path(shards_dir(out) / out.name, rank, world)

    @classmethod
    def states(cls, out: Path, plan: ShardPlan) -> list[ShardState]:
        states = []
        for rank in range(plan.world):
            path = cls.shard_path(out, rank, plan.world)
            expected = len(range(rank, plan["images"], plan.world))
            if not path.is_file():
                states.append(ShardState(rank, expected, 0, "running" if store_locked(path) else "missing", path))
                continue
            with MaskStore(path) as store:
                _check_shard_store(store, plan)
                done = len(store)
            state = "complete" if done >= expected else "running" if store_locked(path) else "stopped"
            states.append(ShardState(rank, expected, done, state, path))
        return states

    @classmethod
    def differences(cls, stored: ShardPlan, mine: ShardPlan, folder: Path) -> str | None:
        if (stored["images"], stored["data_hash"]) != (mine["images"], mine["data_hash"]):
            return (f"this process lists {mine['images']} images (list hash {mine['data_hash']}), but the "
                    f"sharded run in {str(folder)!r} was started on {stored['images']} (hash "
                    f"{stored['data_hash']}): give every shard the same data and --limit")
        if stored["run_key"] != mine["run_key"] or stored["model"] != mine["model"]:
            diff = config_diff(dict(stored["config"]), dict(mine["config"]))
            return (f"this process's configuration differs from the sharded run in {str(folder)!r} "
                    f"(run_key {stored['run_key']} vs {mine['run_key']}; {diff}): give every shard the "
                    "same options")
        return None

    @classmethod
    def stale(cls, out: Path, world: int) -> list[Path]:
        found = []
        for entry in shards_dir(out).glob(f"{out.stem}.shard-*-of-*.h5*"):  # stores, parts, locks
            if entry.name.split(".h5", 1)[0].rsplit("-of-", 1)[-1] != str(world):
                found.append(entry)
        return found

    def _done_already(self) -> bool:
        if not self.out.exists():
            return False
        if _merged_store_holds(self.out, self.plan, self.relpaths):
            if self.shard.rank == 0:  # a merge killed while deleting the shards: finish the tidying
                shutil.rmtree(shards_dir(self.out), ignore_errors=True)
            return True
        raise StoreError(f"{str(self.out)!r} already exists and is not this run's complete merged store; a "
                         "sharded run writes <out>.shards/ and merges into --out at the end: pass "
                         "--overwrite to replace it, or choose another --out")

    def _restart(self) -> None:
        # The old --out goes now, not at the merge: a later resume without --overwrite must not
        # mistake it for this run's result (or refuse to start because of it).
        self.out.unlink(missing_ok=True)
        shutil.rmtree(parts_dir(self.out), ignore_errors=True)

    def _check_own(self) -> None:
        if self.path.is_file():
            with MaskStore(self.path) as store:
                _check_shard_store(store, self.plan)

    def _merge(self, overwrite: bool) -> MergeResult:
        if self.out.exists() and not overwrite:
            raise StoreError(f"{str(self.out)!r} exists; pass --overwrite to replace it with the merge of "
                             f"{str(shards_dir(self.out))!r}")
        paths = [self.shard_path(self.out, rank, self.plan.world) for rank in range(self.plan.world)]
        return MergeResult(merge_shards(paths, self.out, overwrite=overwrite))


def _check_shard_store(store: MaskStore, plan: ShardPlan) -> None:
    """A shard store must have been made for ``plan`` (it records the plan's key when created)."""
    recorded = store.attrs.get("shard_plan")
    if store.run_key != plan["run_key"] or (recorded is not None and recorded != plan.key):
        raise StoreError(f"the shard store {str(store.path)!r} was made for another run than "
                         f"{str(store.path.parent / PLAN_FILE)!r} describes; pass --overwrite to start "
                         "the sharded run again")


def _merged_store_holds(out: Path, plan: ShardPlan, relpaths: Sequence[str]) -> bool:
    """Whether ``out`` is a store of this configuration holding every image of the list."""
    try:
        with MaskStore(out) as store:
            if store.run_key != plan["run_key"] or len(store) != plan["images"]:
                return False
            index, paths = store.column("index"), store.column("path")
    except StoreError:
        return False
    return sorted(index.tolist()) == list(range(plan["images"])) and all(
        relpaths[int(i)] == str(p) for i, p in zip(index, paths))


# --------------------------------------------------------------------------------------------
# evaluations


class EvaluationShard(ShardedJob):
    """A shard of an evaluation (``perturb evaluate``): the store rows whose ``index % N == r``,
    evaluated into :attr:`path` (``<report>.shards/shard-<r>-of-<N>/``), finished by
    :meth:`mark_done`. The merge writes the tables, plots and ``report.html`` that one process
    writes (``vocabulary`` and ``data_root`` go to the HTML report)."""

    kind = EVALUATION
    facts = ("store", "store_run_key", "store_rows", "config", "boxes", "data_root")
    words = _Words(
        noun="an evaluation",
        again="delete {folder!r} to start the sharded evaluation again",
        handed_over="",
        merged="merged {world} evaluation shards into {out}",
        waiting="waiting for shards {waiting}, then `perturb merge {out}`",
        complete="all {world} shards are evaluated: `perturb merge {out}` writes {out}",
        incomplete="cannot merge {out!r}: shards {ranks} of {world} are not evaluated; run them (the same "
                   "command), then merge again")
    DONE = "done.json"
    """The file that marks a shard's evaluation finished."""

    def __init__(self, out: Path, shard: Shard, plan: ShardPlan, overwrite: bool, merged: bool = False,
                 vocabulary: Any = None, data_root: str | os.PathLike[str] | None = None):
        super().__init__(out, shard, plan, overwrite, merged)
        self.vocabulary, self.data_root = vocabulary, data_root

    @classmethod
    def prepare(cls, report: str | os.PathLike[str], shard: Shard, store_path: str | os.PathLike[str],
                config: EvalConfig, boxes: Any, data_root: str | os.PathLike[str] | None, overwrite: bool = False,
                vocabulary: Any = None) -> EvaluationShard:
        """Check (and on first start record) the plan for this shard of the evaluation of
        ``store_path`` into ``report``.

        Raises:
            StoreError: the shard disagrees with the others (``N``, store, settings, boxes, data).
        """
        store_path = Path(store_path)
        with MaskStore(store_path) as store:
            plan = ShardPlan(EVALUATION, shard.world, {
                "store": str(store_path.resolve()), "store_run_key": store.run_key, "store_rows": len(store),
                "config": json.loads(json.dumps(dataclasses.asdict(config))),
                "boxes": None if boxes is None else str(boxes), "data_root": None if data_root is None else str(data_root)})
        return cls._prepare(Path(report), shard, plan, overwrite, vocabulary=vocabulary, data_root=data_root)

    @property
    def done(self) -> bool:
        """Whether this shard's evaluation is finished."""
        return (self.path / self.DONE).is_file()

    def mark_done(self, images: int) -> None:
        """Record this shard's evaluation of ``images`` images as finished."""
        record = {"rank": self.shard.rank, "world": self.shard.world, "images": int(images)}
        claim_file(self.path / self.DONE, json.dumps(record) + "\n", replace=True)

    @staticmethod
    def rows_of(index: np.ndarray, rank: int, world: int) -> np.ndarray:
        """The image indices of ``index`` (a store's ``index`` column) that shard ``rank`` evaluates."""
        return index[index % world == rank]

    @classmethod
    def shard_path(cls, out: Path, rank: int, world: int) -> Path:
        return shards_dir(out) / f"shard-{rank}-of-{world}"

    @classmethod
    def states(cls, out: Path, plan: ShardPlan) -> list[ShardState]:
        try:
            with MaskStore(plan["store"]) as store:
                index = store.column("index")
        except StoreError:  # the merge says so; progress needs no count
            index = np.zeros(0, dtype=np.int64)
        states = []
        for rank in range(plan.world):
            path = cls.shard_path(out, rank, plan.world)
            expected = len(cls.rows_of(index, rank, plan.world))
            if (path / cls.DONE).is_file():
                states.append(ShardState(rank, expected, expected, "complete", path))
            else:
                states.append(ShardState(rank, expected, 0, "stopped" if path.is_dir() else "missing", path))
        return states

    @classmethod
    def differences(cls, stored: ShardPlan, mine: ShardPlan, folder: Path) -> str | None:
        for key, what in (("store", "store"), ("store_run_key", "store"), ("store_rows", "store"),
                          ("config", "evaluation settings"), ("boxes", "--boxes"), ("data_root", "--data")):
            if stored[key] != mine[key]:
                return (f"this process's {what} differs from the sharded evaluation in {str(folder)!r} "
                        f"({key}: {json.dumps(stored[key])[:80]} vs {json.dumps(mine[key])[:80]}): give "
                        "every shard the same store and options")
        return None

    @classmethod
    def stale(cls, out: Path, world: int) -> list[Path]:
        return [entry for entry in shards_dir(out).glob("shard-*-of-*")
                if entry.name.rsplit("-of-", 1)[-1] != str(world)]

    def _merge(self, overwrite: bool) -> MergeResult:
        from ..evaluation import EvalConfig, merge_evaluations

        plan = self.plan
        with MaskStore(plan["store"]) as store:
            if store.run_key != plan["store_run_key"] or len(store) != plan["store_rows"]:
                raise StoreError(f"the store {plan['store']!r} changed since the shards were evaluated; delete "
                                 f"{str(shards_dir(self.out))!r} and evaluate again")
        folders = [self.shard_path(self.out, rank, plan.world) for rank in range(plan.world)]
        merge_evaluations(plan["store"], folders, self.out, EvalConfig(**plan["config"]),
                          with_boxes=plan["boxes"] is not None)
        page = write_run_report([self.out], self.out / "report.html", vocabulary=self.vocabulary,
                                data_root=self.data_root)
        return MergeResult(self.out, page)


_KINDS: dict[str, type[ShardedJob]] = {MASKS: MaskShard, EVALUATION: EvaluationShard}
