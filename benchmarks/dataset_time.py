"""Wall-clock time of a dataset run, preset against preset: ``perturb masks`` on the same images.

Run from the repository root::

    .venv/bin/python benchmarks/dataset_time.py --images 16 --variant paper=paper --variant fast=paper-fast
    python benchmarks/dataset_time.py --device cuda --images 100 --batch 32 --variant paper=paper --variant fast=paper-fast

Each variant (``NAME=PRESET[:KEY=VALUE,...]``, as in :mod:`iteration_budget`) runs
:func:`pipeline.jobs.run.run_masks` over the first ``--images`` development images into a fresh store
(same batch size, loader and seeds), timed from the first batch to the last row written (model
loading excluded). Per variant: seconds, images per second, ``ratio_vs_first`` (the first variant's
seconds over this one's, so > 1 is faster), mean iterations per image, mean ``p_final`` and
``area`` from the store. Writes ``results/benchmarks/dataset-time-<device>.csv`` (``--out`` changes
the stem).
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
from iteration_budget import parse_variant  # noqa: E402

import torch  # noqa: E402

from pipeline.jobs import run as runlib  # noqa: E402
from pipeline.models import load_model  # noqa: E402
from pipeline.store import MaskStore  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8, help="loader batch (and the stream's slots)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--variant", action="append", required=True,
                        help="NAME=PRESET[:KEY=VALUE,...], repeatable; the first is the baseline")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", default="dataset-time", help="CSV name stem under results/benchmarks/")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = pick_device(args.device)
    info = machine(device)
    print(f"machine: {info['machine']}; torch {info['torch']}; load average {load_average()}")
    classifier = load_model("efficientnet_lite0", device=device)
    run = runlib.RunConfig(batch_size=args.batch, workers=2, limit=args.images, progress=False)
    rows, first = [], None
    with tempfile.TemporaryDirectory() as folder:
        for name, config in (parse_variant(v) for v in args.variant):
            out = Path(folder) / f"{name}.h5"
            start = time.perf_counter()
            runlib.run_masks(args.data, out, classifier, config, run)
            seconds = time.perf_counter() - start
            with MaskStore(out) as store:
                solved = store.table().query("status == 'ok'")
            first = first or seconds
            iterations = solved["iterations"].mean() if "iterations" in solved else config.optim.iterations
            row = {"machine": info["machine"], "torch": info["torch"], "date": now(), "variant": name,
                   "spec": next(v for v in args.variant if v.startswith(f"{name}=")), "images": len(solved),
                   "batch": args.batch, "seconds": seconds, "images_per_s": len(solved) / seconds,
                   "ratio_vs_first": first / seconds, "mean_iterations": float(iterations),
                   "mean_p_final": float(solved["p_final"].mean()), "mean_area": float(solved["area"].mean()),
                   "loadavg_row": load_average()}
            rows.append(row)
            print(f"  {name:12s} {seconds:7.1f} s, x{row['ratio_vs_first']:.2f} vs {rows[0]['variant']}, "
                  f"{row['mean_iterations']:.1f} iterations/image, p_final {row['mean_p_final']:.4f}, "
                  f"area {row['mean_area']:.3f} (load {row['loadavg_row']})", flush=True)
    path = write_csv(RESULTS / f"{args.out}-{device.type}.csv", rows)
    print(table(rows, ["variant", "images", "seconds", "ratio_vs_first", "mean_iterations", "mean_p_final",
                       "mean_area"]))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
