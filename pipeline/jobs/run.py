"""The dataset run: stream images through a DataLoader, solve each batch on the device, store it.

:func:`run_masks` is what ``perturb masks`` calls. It resumes: the store knows which image indices
are committed, and only the others are loaded. Unreadable images become ``skipped`` rows with a
reason; nothing a single image does stops the run.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import torch
from tqdm.auto import tqdm

from ..config import SolverConfig
from ..data import ImageDataset, discover, make_loader, stop_workers
from ..distributed import Shard
from ..errors import ConfigError, DeviceMemoryError
from ..models import Classifier
from ..solve import SolveResult, solve
from ..store import STATUS_OK, STATUS_SKIPPED, MaskWriter
from .settings import RunConfig, store_config
from .shards import MaskShard

if TYPE_CHECKING:
    from ..amortise import WarmStart
    from ..data.targets import TargetTable

EXTRA_COLUMNS = ("area", "tv")
"""Per-image solver statistics stored beside the schema's columns."""


@dataclass
class RunSummary:
    """What a run did: images solved now, already in the store, skipped (by reason)."""

    out: Path
    total: int
    solved: int = 0
    resumed: int = 0
    skipped: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)  # e.g. what a sharded run did after its shard

    def lines(self) -> list[str]:
        text = [f"{self.out}: {self.total} images; {self.solved} solved now, {self.resumed} already done"]
        if self.skipped:
            text.append("skipped: " + ", ".join(f"{n} {reason}" for reason, n in self.skipped.most_common()))
        return text + self.notes


def batch_targets(batch: dict[str, Any], records: list, run: RunConfig) -> torch.Tensor | None:
    """``(b,)`` int64: the class to explain for each image of a loader batch: the folder's label
    (``target="label"``) or the targets table's class; None for ``top1`` (the model's prediction)."""
    if run.targets is not None:
        return run.targets.lookup([records[int(i)].relpath for i in batch["index"]])
    return batch["label"] if run.target == "label" else None


def run_masks(source: str | Path, out: str | Path, classifier: Classifier, solver: SolverConfig,
              run: RunConfig = RunConfig(), overwrite: bool = False, shard: Shard | None = None,
              init: WarmStart | None = None) -> RunSummary:
    """Solve and store the masks of every image under ``source`` into the HDF5 store ``out``.

    With ``init`` (:class:`pipeline.amortise.WarmStart`, ``perturb masks --init``) every image starts
    from the predictor's mask and ``solver`` (adapted by :meth:`WarmStart.adapt`) refines it; the
    store records the predictor (:meth:`WarmStart.configure`), so a store of another predictor is
    not resumed.

    With a ``shard`` of ``N > 1`` only the images ``index % N == shard.rank`` are solved, into
    a shard store of ``<out>.shards/``, merged into ``out`` once every shard is complete (see
    :func:`run_store`).

    Raises:
        ImageReadError: ``source`` is missing or holds no image.
        StoreError: ``out`` exists with another configuration (pass ``overwrite=True``).
    """
    k = solver.objective.masks_per_image
    mask_shape = (k, solver.mask.size, solver.mask.size)
    config = store_config(solver, run, classifier)  # before compiling: the spec, not the wrapper
    if init is not None:
        if solver.optim.stop_window:
            raise ConfigError("--init does not combine with early stopping (optim.stop_window); "
                              "refine for a fixed -n instead")
        config = init.configure(config)
    # A shard that does not belong to its run is refused now, not after folding and compiling.
    job = _StoreJob.open(source, out, classifier, config, run, overwrite, shard)
    if job.shard is not None and job.shard.merged:
        return job.already_merged()
    classifier = classifier.folded()  # BatchNorm into the convolutions: the same function, faster
    if run.batch_size == "auto":  # probed uncompiled: compiling the probe's shapes would be wasted
        run = dataclasses.replace(run, batch_size=auto_batch_size(classifier, solver))
        if run.progress:
            tqdm.write(f"batch size {run.batch_size} (auto, {classifier.device.type})")
    if run.compile and init is None:  # the predictor hooks the classifier's modules, which compiling hides
        classifier = classifier.compiled()

    def solve_batch(batch: dict[str, Any], records: list) -> tuple[dict[str, Any], torch.Tensor | None]:
        return _solve_batch(batch, records, classifier, solver, run, init)

    def solve_streamed(loader: Iterable[dict[str, Any]], records: list) -> Iterator[tuple[dict[str, Any], torch.Tensor]]:
        return _solve_streamed(loader, records, classifier, solver, run)

    # With early stopping, images stream through slots that are refilled as images stop
    # (pipeline.solve.stream): the batch stays full and keeps its shape.
    return job.fill(classifier, mask_shape, run, solve_batch, "masks",
                    solve_streamed if solver.optim.stop_window else None,
                    attrs=None if init is None else init.attrs())


BatchFn = Callable[[dict[str, Any], list], tuple[dict[str, Any], "torch.Tensor | None"]]
"""``batch_fn(loader_batch, records) -> (rows, masks)``: the store rows and masks ``(b, *mask_shape)``
of one :func:`pipeline.data.collate` batch (see :func:`batch_rows` for the row skeleton)."""

StreamFn = Callable[[Iterable[dict[str, Any]], list], Iterator[tuple[dict[str, Any], "torch.Tensor | None"]]]
"""``stream_fn(loader, records)``: like :data:`BatchFn` for a whole loader, yielding ``(rows, masks)``
of any images in any order, as they are done."""


def run_store(source: str | Path, out: str | Path, classifier: Classifier, config: dict[str, Any],
              mask_shape: tuple[int, int, int], run: RunConfig, batch_fn: BatchFn, overwrite: bool = False,
              desc: str = "masks", stream_fn: StreamFn | None = None, shard: Shard | None = None) -> RunSummary:
    """The resumable dataset loop shared by :func:`run_masks` and the saliency baselines.

    Discovers the images under ``source``, opens (or resumes) the store ``out`` identified by
    ``config``, loads only the images not yet committed, and appends what ``batch_fn`` returns
    for each loader batch (or, given ``stream_fn``, what it yields for the whole loader).
    Unreadable images are the ``batch_fn``'s skipped rows.

    With a ``shard`` of ``N > 1`` (:mod:`pipeline.distributed`) the images are those with
    ``index % N == shard.rank``, keeping their index (hence their seed), and the store is this
    shard's in ``<out>.shards/`` (:class:`pipeline.jobs.shards.MaskShard`); under torchrun rank 0
    then merges every shard into ``out``, elsewhere ``perturb merge`` does.

    Raises:
        ImageReadError: ``source`` is missing or holds no image.
        StoreError: ``out`` exists with another configuration (pass ``overwrite=True``), or the
            shard disagrees with the other shards of its run.
    """
    job = _StoreJob.open(source, out, classifier, config, run, overwrite, shard)
    if job.shard is not None and job.shard.merged:
        return job.already_merged()
    return job.fill(classifier, mask_shape, run, batch_fn, desc, stream_fn)


@dataclass(frozen=True)
class _StoreJob:
    """What one process writes into a store: every image under ``source``, or its shard's."""

    records: list
    root: Path
    out: Path
    config: dict[str, Any]
    overwrite: bool
    shard: MaskShard | None  # None: one process writes ``out`` itself

    @classmethod
    def open(cls, source: str | Path, out: str | Path, classifier: Classifier, config: dict[str, Any],
             run: RunConfig, overwrite: bool, shard: Shard | None) -> _StoreJob:
        """Discover the images, and for a shard check it against its run (:meth:`MaskShard.prepare`)."""
        records = discover(source, classifier.vocabulary, limit=run.limit)
        if run.targets is not None:
            _check_targets(run.targets, records, classifier)
        root = Path(source) if Path(source).is_dir() else Path(source).parent
        if shard is None or not shard.sharded:
            return cls(records, root, Path(out), config, overwrite, None)
        job = MaskShard.prepare(out, shard, [r.relpath for r in records], config, classifier.spec, overwrite)
        return cls(records, root, Path(out), config, job.overwrite, job)

    def already_merged(self) -> RunSummary:
        return RunSummary(self.out, len(self.records), resumed=len(self.records), notes=["already merged"])

    def fill(self, classifier: Classifier, mask_shape: tuple[int, int, int], run: RunConfig, batch_fn: BatchFn,
             desc: str, stream_fn: StreamFn | None, attrs: dict[str, str] | None = None) -> RunSummary:
        """Solve the images not yet in the store and append them; a shard then finishes
        (:meth:`pipeline.jobs.shards.ShardedJob.finish`: merged, or what is left). ``attrs``: file
        attributes a new store gets besides its configuration (e.g. a warm start's predictor path)."""
        if self.shard is None:
            return _fill_store(self.records, self.out, range(len(self.records)), classifier, self.config,
                               mask_shape, self.root, run, batch_fn, stream_fn, self.overwrite, desc, attrs=attrs)
        job = self.shard
        summary = _fill_store(self.records, job.writer_path, job.indices, classifier, self.config, mask_shape,
                              self.root, run, batch_fn, stream_fn, self.overwrite,
                              f"{desc} {job.shard.rank}/{job.shard.world}", shard=(job.shard.rank, job.shard.world),
                              attrs={**job.attrs, **(attrs or {})})
        summary.notes.extend(job.finish())
        return summary


def _check_targets(targets: "TargetTable", records: list, classifier: Classifier) -> None:
    """Every image has a row in ``targets`` and every class is one of the classifier's."""
    targets.lookup([r.relpath for r in records])
    beyond = sorted({c for c in targets.classes.values() if c >= len(classifier.vocabulary)})
    if beyond:
        raise ConfigError(f"targets file {targets.source!r} names classes {beyond[:3]} beyond the model's "
                          f"{len(classifier.vocabulary)} classes")


def _fill_store(records: list, out: str | Path, indices: Iterable[int], classifier: Classifier,
                config: dict[str, Any], mask_shape: tuple[int, int, int], root: Path, run: RunConfig,
                batch_fn: BatchFn, stream_fn: StreamFn | None, overwrite: bool, desc: str,
                shard: tuple[int, int] | None = None, attrs: dict[str, str] | None = None) -> RunSummary:
    """Solve the images ``indices`` of ``records`` not yet in the store and append them
    (``shard``: the writer writes ``<out stem>.shard-r-of-n.h5``)."""
    with MaskWriter(out, config, classifier.spec, os.path.abspath(root), mask_shape, overwrite=overwrite,
                    input_size=classifier.input_size, shard=shard, attrs=attrs) as writer:
        done = writer.done_indices()
        mine = list(indices)
        todo = [i for i in mine if i not in done]
        summary = RunSummary(writer.path, len(mine), resumed=len(mine) - len(todo))
        if not todo:
            return summary
        # "auto" is resolved by callers that know their memory needs (run_masks); others get CPU_BATCH.
        batch_size = CPU_BATCH if run.batch_size == "auto" else run.batch_size
        if CPU_PADDING and classifier.device.type == "cpu":
            batch_fn = _padded(batch_fn, run, batch_size)
        dataset = ImageDataset(records, classifier.input_size, max_pixels=run.max_pixels)
        loader = make_loader(dataset, batch_size, run.workers, indices=todo)
        with tqdm(total=len(mine), initial=summary.resumed, unit="img", disable=not run.progress,
                  desc=desc, dynamic_ncols=True) as bar:
            try:
                done_rows = stream_fn(loader, records) if stream_fn else (batch_fn(batch, records) for batch in loader)
                for rows, masks in done_rows:
                    writer.append(rows, masks)
                    status = rows["status"]
                    summary.solved += sum(s == STATUS_OK for s in status)
                    summary.skipped.update(r for s, r in zip(status, rows["reason"]) if s == STATUS_SKIPPED)
                    bar.update(len(status))
            finally:  # the workers stop while this process is alive to stop them, interrupted or not
                stop_workers(loader)
    return summary


def _padded(batch_fn: BatchFn, run: RunConfig, size: int) -> BatchFn:
    """``batch_fn`` on loader batches padded with blank images until ``size`` images are solved
    (:data:`CPU_PADDING`); the blanks' rows and masks are dropped."""

    def padded(batch: dict[str, Any], records: list) -> tuple[dict[str, Any], torch.Tensor | None]:
        count = len(batch["ok"])
        missing = size - int(_solvable(batch, run).sum())
        if missing <= 0:
            return batch_fn(batch, records)
        image = batch["image"]
        blank = {"image": image.new_zeros(missing, *image.shape[1:]),
                 "height": torch.full((missing,), image.shape[-2]), "width": torch.full((missing,), image.shape[-1]),
                 "index": torch.zeros(missing, dtype=torch.int64), "label": torch.zeros(missing, dtype=torch.int64),
                 "ok": torch.ones(missing, dtype=torch.bool), "reason": [""] * missing}
        rows, masks = batch_fn(_concat([batch, blank]), records)
        return _take(rows, list(range(count))), None if masks is None else masks[:count]

    return padded


def _solvable(batch: dict[str, Any], run: RunConfig) -> torch.Tensor:
    """``(b,)`` bool: the images of a loader batch that are solved: readable, and labelled when
    ``run.target == "label"``."""
    return batch["ok"] & (batch["label"] >= 0) if run.target == "label" else batch["ok"].clone()


def batch_rows(batch: dict[str, Any], records: list, run: RunConfig,
               extra: tuple[str, ...] = EXTRA_COLUMNS) -> tuple[dict[str, Any], torch.Tensor]:
    """The store rows of a loader batch before solving: ``(rows, ok)``.

    ``rows`` has every :data:`pipeline.store.COLUMNS` entry plus ``extra``; ``target`` is -1 and the
    float columns NaN, to be filled for the chosen images. ``ok`` ``(b,)`` bool marks the images to
    solve: readable, and labelled when ``run.target == "label"`` (else skipped as "no label").
    """
    ok = _solvable(batch, run)
    reasons = [("no label" if readable and not solved else reason)
               for readable, solved, reason in zip(batch["ok"].tolist(), ok.tolist(), batch["reason"])]
    b = len(ok)
    rows: dict[str, Any] = {
        "index": batch["index"], "path": [records[int(i)].relpath for i in batch["index"]],
        "height": batch["height"], "width": batch["width"], "label": batch["label"],
        "status": [STATUS_OK if o else STATUS_SKIPPED for o in ok.tolist()], "reason": reasons,
        "target": torch.full((b,), -1, dtype=torch.int64),
    }
    for name in ("p_original", "p_perturbed", "p_final", "loss", *extra):
        rows[name] = torch.full((b,), float("nan"))
    return rows, ok


def _solve_batch(batch: dict[str, Any], records: list, classifier: Classifier, solver: SolverConfig,
                 run: RunConfig, init: WarmStart | None = None) -> tuple[dict[str, Any], torch.Tensor | None]:
    """Solve the readable images of a loader batch; returns the store rows and masks ``(b, K, h, w)``."""
    # Early stopping adds the iterations each image took; without it the store keeps the columns
    # it always had (so stores made before the option existed still resume).
    rows, ok = batch_rows(batch, records, run, EXTRA_COLUMNS + (("iterations",) if solver.optim.stop_window else ()))
    b = len(ok)
    k = solver.objective.masks_per_image
    masks = torch.full((b, k, solver.mask.size, solver.mask.size), float("nan"))
    chosen = ok.nonzero()[:, 0]
    if len(chosen):
        device = classifier.device
        images = batch["image"][chosen]
        chosen_targets = batch_targets(batch, records, run)
        targets = None if chosen_targets is None else chosen_targets[chosen]
        seeds = batch["index"][chosen] + run.seed
        result = _solve_fitting(classifier, images.to(device, non_blocking=True), solver, targets, seeds, init)
        for name, values in result.columns().items():
            if name in rows:
                rows[name][chosen] = values.to("cpu", rows[name].dtype)
        masks[chosen] = result.masks.cpu()
    return rows, masks


def _solve_streamed(loader: Iterable[dict[str, Any]], records: list, classifier: Classifier, solver: SolverConfig,
                    run: RunConfig) -> Iterator[tuple[dict[str, Any], torch.Tensor]]:
    """Rows and masks of the loader's images through :func:`pipeline.solve.stream.solve_stream`, as they
    finish; unreadable (or, for ``--target label``, unlabelled) images are given out unsolved."""
    from ..solve.stream import StreamBatch, solve_stream

    k = solver.objective.masks_per_image
    waiting: dict[int, dict[str, Any]] = {}  # dataset index -> its row, while its image is solved
    unsolved: list[dict[str, Any]] = []

    def batches() -> Iterator[StreamBatch]:
        for batch in loader:
            rows, ok = batch_rows(batch, records, run, EXTRA_COLUMNS + ("iterations",))
            if not bool(ok.all()):
                unsolved.append(_take(rows, (~ok).nonzero()[:, 0].tolist()))
            chosen = ok.nonzero()[:, 0]
            for j in chosen.tolist():
                waiting[int(rows["index"][j])] = _take(rows, [j])
            if len(chosen):
                targets = batch_targets(batch, records, run)
                yield StreamBatch(batch["image"][chosen], None if targets is None else targets[chosen],
                                  batch["index"][chosen] + run.seed, batch["index"][chosen])

    def flush() -> Iterator[tuple[dict[str, Any], torch.Tensor]]:
        while unsolved:
            rows = unsolved.pop(0)
            yield rows, torch.full((len(rows["index"]), k, solver.mask.size, solver.mask.size), float("nan"))

    slots = run.batch_size if isinstance(run.batch_size, int) else CPU_BATCH
    try:
        for ids, result in solve_stream(classifier, batches(), solver, slots=slots):
            yield from flush()
            rows = _concat([waiting.pop(i) for i in ids.tolist()])
            for name, values in result.columns().items():
                if name in rows:
                    rows[name] = values.to("cpu", rows[name].dtype)
            yield rows, result.masks.cpu()
    except torch.OutOfMemoryError as error:
        # The slots cannot be halved mid-stream as a batch can (_solve_fitting): stop cleanly.
        raise DeviceMemoryError(
            f"the device ran out of memory with {slots} slots (early stopping streams images through a "
            f"fixed batch); the {len(waiting)} images in flight are not stored, everything finished is: "
            f"rerun with a smaller --batch-size to resume") from error
    yield from flush()


def _take(rows: dict[str, Any], positions: list[int]) -> dict[str, Any]:
    """The rows at ``positions`` of a rows dict (tensors and lists, as :func:`batch_rows` makes)."""
    return {name: values[positions] if torch.is_tensor(values) else [values[i] for i in positions]
            for name, values in rows.items()}


def _concat(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One rows dict of several, in order."""
    return {name: torch.cat([p[name] for p in parts]) if torch.is_tensor(parts[0][name])
            else [v for p in parts for v in p[name]] for name in parts[0]}


def _solve_fitting(classifier: Classifier, images: torch.Tensor, solver: SolverConfig,
                   targets: torch.Tensor | None, seeds: torch.Tensor, init: WarmStart | None = None) -> SolveResult:
    """:func:`solve` (from ``init``'s predicted masks when given), halving the batch when the device
    runs out of memory. Images are independent in the solver (per-image seeds), so the halves give
    the same masks as the whole batch would."""
    try:
        if init is not None:
            return init.solve(classifier, images, solver, targets=targets, seeds=seeds)
        return solve(classifier, images, solver, targets=targets, seeds=seeds)
    except torch.OutOfMemoryError:
        if len(images) == 1:
            raise
        torch.cuda.empty_cache()
    half = len(images) // 2
    parts = [_solve_fitting(classifier, images[part], solver, None if targets is None else targets[part], seeds[part],
                            init) for part in (slice(0, half), slice(half, None))]
    return SolveResult(*(torch.cat([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(SolveResult)))


AUTO_BATCH_CAP = 128
"""Largest automatic batch: beyond it a GPU gains little (``benchmarks/run.py solver``) while a kill loses
more work and the first results come later."""

CPU_BATCH = 8
"""Automatic batch on a CPU: the fastest batch measured on the 2-core CPU of results/benchmarks."""

CPU_PADDING = True
"""On a CPU, solve every loader batch at the full batch size, padding a short one (the last batch,
or one with unreadable images) with blank images whose results are dropped (masks and baselines
alike: a baseline's forward and backward passes round differently at batch 1 too). CPU kernels round
differently at different batch sizes (not with different images in the batch), so without this a
mask would depend on how a run was split into shards or resumed after a kill: the last batch of
100 images at ``-b 8`` holds 4 images in one process but 2 in each of two shards, which moved
their ``p_final`` by 1e-5 and mask cells by up to 0.03 after 5 iterations. The cost is at most
``batch_size - 1`` extra solves per run (or per shard)."""


def auto_batch_size(classifier: Classifier, solver: SolverConfig, fraction: float = 0.6,
                    cap: int = AUTO_BATCH_CAP) -> int:
    """The batch to solve at once: on a GPU, the largest that keeps the solver's peak memory under
    ``fraction`` of the free device memory (at most ``cap``, a multiple of 8 when 8 or more);
    :data:`CPU_BATCH` elsewhere.

    The peak is measured, not guessed: two iterations of :func:`solve` on 2 and on 4 random
    images give the memory per image (the difference) and the fixed part. A batch that still runs
    out of memory later (fragmentation, another process) is halved by the run.
    """
    if classifier.device.type != "cuda":
        return min(CPU_BATCH, cap)
    device = classifier.device
    probe = dataclasses.replace(solver, optim=dataclasses.replace(solver.optim, iterations=2, stop_window=0))
    peaks = []
    for batch in (2, 4):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        images = torch.rand(batch, 3, *classifier.input_size, device=device)
        solve(classifier, images, probe)
        del images
        peaks.append(torch.cuda.max_memory_allocated(device) - before)
    per_image = max((peaks[1] - peaks[0]) / 2, 1.0)
    fixed = max(peaks[0] - 2 * per_image, 0.0)
    free, _ = torch.cuda.mem_get_info(device)
    batch = int((fraction * free - fixed) // per_image)
    batch = max(1, min(cap, batch))
    return batch - batch % 8 if batch >= 8 else batch
