"""Early stopping in a dataset run: fixed iterations against early stopping, two ways.

Run from the repository root::

    .venv/bin/python benchmarks/early_stop.py --images 24 --batch 8          # CPU: about 10 minutes
    python benchmarks/early_stop.py --device cuda --images 100 --batch 32

Each mode runs :func:`pipeline.jobs.run.run_masks`'s loop over the first ``--images`` development images
into a fresh store (same preset, batch size and seeds), and is timed from the first batch to the
last row written (model loading excluded):

* ``fixed``: every image runs the preset's iterations (early stopping off), the baseline;
* ``batches``: early stopping inside each loader batch (:func:`pipeline.solve.solver.solve`): a batch
  lasts as long as its slowest image, shrinking in power-of-two steps as images stop;
* ``stream``: early stopping with slots refilled as images stop (:mod:`pipeline.solve.stream`), what
  ``perturb masks --set optim.stop_window=...`` runs.

Per mode: seconds, images per second, ``ratio_vs_fixed``, mean iterations per image, mean
``p_final`` and ``area`` from the store. Masks of ``stream`` equal each image's own early-stopped
solve (tests/core/test_stream.py), so its quality is the early-stopping quality that
``iterations.py --early-stop`` measures.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DEFAULT_DATA, RESULTS, load_average, machine, now, pick_device, table, write_csv  # noqa: E402

from pipeline.jobs import run as runlib  # noqa: E402
from pipeline.config import override, preset  # noqa: E402
from pipeline.models import load_model  # noqa: E402
from pipeline.store import MaskStore  # noqa: E402


def run_mode(mode: str, classifier, data: Path, out: Path, config, run: runlib.RunConfig) -> float:
    """Seconds to solve and store the images in ``mode`` (``fixed``, ``batches`` or ``stream``)."""
    start = time.perf_counter()
    if mode == "batches":  # the per-batch loop run_masks uses without early stopping
        k = max(1, len(config.objective.areas))
        store_config = runlib.store_config(config, run, classifier)
        runlib.run_store(data, out, classifier, store_config, (k, config.mask.size, config.mask.size), run,
                         lambda batch, records: runlib._solve_batch(batch, records, classifier, config, run))
    else:
        runlib.run_masks(data, out, classifier, config, run)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--batch", type=int, default=8, help="loader batch, and the stream's slots")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--iterations", type=int, default=0, help="0: the preset's own")
    parser.add_argument("--early-stop", default="25,0.01", metavar="WINDOW,TOL")
    parser.add_argument("--modes", nargs="+", default=["fixed", "batches", "stream"])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    device = pick_device(args.device)
    info = machine(device)
    print(f"machine: {info['machine']}; torch {info['torch']}; load average {load_average()}")
    classifier = load_model("efficientnet_lite0", device=device).folded()
    base = preset(args.preset)
    if args.iterations:
        base = override(base, [f"optim.iterations={args.iterations}"])
    window, tol = args.early_stop.split(",")
    stopping = override(base, [f"optim.stop_window={window}", f"optim.stop_tol={tol}"])
    run = runlib.RunConfig(batch_size=args.batch, workers=2, limit=args.images, progress=False)
    rows, fixed_seconds = [], None
    with tempfile.TemporaryDirectory() as folder:
        for mode in args.modes:
            config = base if mode == "fixed" else stopping
            out = Path(folder) / f"{mode}.h5"
            seconds = run_mode(mode, classifier, args.data, out, config, run)
            with MaskStore(out) as store:
                solved = store.table().query("status == 'ok'")
            fixed_seconds = seconds if mode == "fixed" else fixed_seconds
            iterations = solved["iterations"].mean() if "iterations" in solved else config.optim.iterations
            row = {"machine": info["machine"], "torch": info["torch"], "date": now(), "mode": mode,
                   "preset": args.preset, "images": len(solved), "batch": args.batch,
                   "max_iterations": config.optim.iterations, "early_stop": "" if mode == "fixed" else args.early_stop,
                   "seconds": seconds, "images_per_s": len(solved) / seconds,
                   "ratio_vs_fixed": fixed_seconds / seconds if fixed_seconds else float("nan"),
                   "mean_iterations": float(iterations), "mean_p_final": float(solved["p_final"].mean()),
                   "mean_area": float(solved["area"].mean()), "loadavg_row": load_average()}
            rows.append(row)
            print(f"  {mode:8s} {seconds:7.1f} s, {row['images_per_s']:.3f} img/s, x{row['ratio_vs_fixed']:.2f} vs "
                  f"fixed, {row['mean_iterations']:.1f} iterations/image, p_final {row['mean_p_final']:.4f}, "
                  f"area {row['mean_area']:.3f} (load {row['loadavg_row']})", flush=True)
    out = write_csv(args.out / f"early-stop-run-{device.type}.csv", rows)
    print(table(rows, ["mode", "images", "batch", "seconds", "ratio_vs_fixed", "mean_iterations", "mean_p_final",
                       "mean_area"]))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
