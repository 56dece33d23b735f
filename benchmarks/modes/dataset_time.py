"""Wall time of a dataset run, variant against variant: ``run_masks`` (what ``perturb masks`` runs)
over the same images.

Each variant (``--variant NAME=PRESET[:KEY=VALUE,...]``; the first is the baseline) runs
:func:`pipeline.run_masks` over the first ``--images`` images into a fresh store (same batch size,
two loader workers, same seeds), timed from the first batch to the last row written (model loading
excluded). A variant with early stopping (``optim.stop_window``) streams its images through slots
refilled as images stop (``pipeline.solve.stream``), as ``perturb masks`` does.

``--early-stop WINDOW,TOL`` adds, for every variant without early stopping, two copies with it:
``NAME-stream`` (the slots, as above) and ``NAME-batches`` (early stopping inside each loader
batch: a batch lasts as long as its slowest image, shrinking in power-of-two steps).

Per variant: seconds, images per second, ``ratio_vs_first`` (the first variant's seconds over this
one's, so > 1 is faster), mean iterations per image, mean ``p_final`` and ``area`` from the store.
Files: ``STEM.csv`` (default ``dataset-time-<device>.csv``).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import add_batch_size, add_images, early_stop, load_average, stop_overrides, table
from benchmarks.solving import VARIANT_HELP, parse_variant
from pipeline import MaskStore, RunConfig, load_model, override, run_masks

NAME = "dataset-time-{device}"
DEVICES = ("cpu", "cuda")
THREADS = 0
WORKERS = 2
"""DataLoader decoding processes of every run."""


def add_arguments(parser) -> None:
    parser.add_argument("--variant", action="append", type=parse_variant, required=True, help=VARIANT_HELP)
    parser.add_argument("--early-stop", type=early_stop, default=None, metavar="WINDOW,TOL",
                        help="add NAME-stream and NAME-batches copies of each variant with early stopping")
    add_images(parser, 16)
    add_batch_size(parser, 8, "loader batch (and the stream's slots)")


def run(args, device: torch.device, results) -> int:
    variants = [(name, config, False) for name, config in args.variant]
    if args.early_stop:
        variants += [(f"{name}-{loop}", override(config, stop_overrides(args.early_stop)), loop == "batches")
                     for name, config in args.variant if not config.optim.stop_window
                     for loop in ("batches", "stream")]
    classifier = load_model("efficientnet_lite0", device=device)
    run_config = RunConfig(batch_size=args.batch_size, workers=WORKERS, limit=args.images, progress=False)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as folder:
        for name, config, per_batch in variants:
            out = Path(folder) / f"{name}.h5"
            seconds = time_run(classifier, args.data, out, config, run_config, per_batch)
            with MaskStore(out) as store:
                solved = store.table().query("status == 'ok'")
            iterations = solved["iterations"].mean() if "iterations" in solved else config.optim.iterations
            row = {"variant": name, "loop": loop_of(config, per_batch),
                   "images": len(solved), "batch": args.batch_size, "max_iterations": config.optim.iterations,
                   "seconds": seconds, "images_per_s": len(solved) / seconds,
                   "ratio_vs_first": (rows[0]["seconds"] if rows else seconds) / seconds,
                   "mean_iterations": float(iterations), "mean_p_final": float(solved["p_final"].mean()),
                   "mean_area": float(solved["area"].mean()), "loadavg_row": load_average()}
            rows.append(row)
            print(f"  {name:16s} {seconds:7.1f} s, x{row['ratio_vs_first']:.2f} vs {rows[0]['variant']}, "
                  f"{row['mean_iterations']:.1f} iterations/image, p_final {row['mean_p_final']:.4f}, "
                  f"area {row['mean_area']:.3f} (load {row['loadavg_row']})", flush=True)
            path = results.write(rows)
    print(table(rows, ["variant", "loop", "images", "seconds", "ratio_vs_first", "mean_iterations", "mean_p_final",
                       "mean_area"]))
    print(f"wrote {path}")
    return 0


def loop_of(config, per_batch: bool) -> str:
    """How the run solves: fixed iterations, early stopping in slots, or inside each batch."""
    if not config.optim.stop_window:
        return "fixed"
    return "batches" if per_batch else "stream"


def time_run(classifier, data: Path, out: Path, config, run_config: RunConfig, per_batch: bool) -> float:
    """Seconds to solve and store the images; ``per_batch``: early stopping inside each loader batch."""
    start = time.perf_counter()
    if per_batch:
        solve_in_batches(classifier, data, out, config, run_config)
    else:
        run_masks(data, out, classifier, config, run_config)
    return time.perf_counter() - start


def solve_in_batches(classifier, data: Path, out: Path, config, run_config: RunConfig) -> None:
    """``run_masks``'s loop with each loader batch solved by one ``solve`` call, early stopping inside
    it: ``run_masks`` without the stream it uses when early stopping is on."""
    from pipeline.jobs import run as runlib

    folded = classifier.folded()
    store_config = runlib.store_config(config, run_config, folded)
    k = config.objective.masks_per_image
    runlib.run_store(data, out, folded, store_config, (k, config.mask.size, config.mask.size), run_config,
                     lambda batch, records: runlib._solve_batch(batch, records, folded, config, run_config))

