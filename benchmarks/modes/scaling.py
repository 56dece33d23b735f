"""End-to-end throughput of dataset runs: the whole job against the solver alone, and 1 process
against N processes (torchrun shards).

Three parts (``--parts``), each with its baseline measured in the same run:

* ``job-vs-solver`` (in this process, ``--threads`` torch threads): the solver alone on images
  decoded beforehand (``pipeline.solve.solver.solve`` over batches of preloaded tensors, the baseline)
  against the whole job on the same images, :func:`pipeline.jobs.run.run_masks` (decoding in
  ``--workers`` DataLoader processes, solving, writing the HDF5 store), with early stopping off
  and with streamed early stopping on (``--early-stop WINDOW,TOL``). The model is loaded and
  BatchNorm-folded once before either is timed. ``ratio`` = job rate / solver rate: 0.9 or more
  means decoding and storing keep up with the solver.
* ``processes`` (each a fresh command, one thread per process): ``perturb masks`` in one process
  (the baseline) against ``torchrun --nproc-per-node P`` sharded runs, each merged into one
  store. ``seconds`` is the whole command's wall time (start-up, model loading, solving, the
  barrier and the merge); ``steady_images_per_s`` subtracts the wall time of the same command
  on ``P`` images and 1 iteration (start-up and merge), so it is the rate a long run approaches.
* ``merge`` (no model): ``perturb merge`` of ``--merge-shards`` synthetic shard stores holding
  ``--merge-rows`` rows of 28x28 masks in all, the step a sharded run adds at its end; rows/s.

Every row has wall seconds and CPU seconds (this process's, or the command's whole process tree
from ``getrusage``): on a shared machine the wall time moves with the other users' load, the CPU
time much less, so ``ratio`` uses CPU seconds on a CPU (``ratio_basis``) and wall seconds on a
GPU. For P processes on P free cores the wall time is about the CPU time divided by P.

Files: ``STEM.csv`` (default ``scaling-<device>.csv``).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import REPO, add_batch_size, add_images, clock, early_stop, load_average, load_images, now, \
    stop_overrides, table
from pipeline import RunConfig, load_model, override, preset, run_masks
from pipeline.solve import solve

NAME = "scaling-{device}"
DEVICES = ("cpu", "cuda")
THREADS = 1
PARTS = ("job-vs-solver", "processes", "merge")


def solver_seconds(classifier, images: torch.Tensor, config, batch: int) -> tuple[float, float]:
    """Wall and CPU seconds for :func:`solve` over ``images`` (decoded, on the device) in batches."""
    start, cpu = clock(classifier.device), time.process_time()
    for first in range(0, len(images), batch):
        chunk = images[first:first + batch]
        solve(classifier, chunk, config, seeds=torch.arange(first, first + len(chunk)))
    return clock(classifier.device) - start, time.process_time() - cpu


def job_seconds(classifier, data: Path, config, run: RunConfig, folder: Path, name: str) -> tuple[float, float]:
    """Wall and CPU seconds for :func:`run_masks` into a fresh store (decode, solve, store; the
    CPU time counts this process only, so decoding belongs to it with ``--workers 0``)."""
    start, cpu = clock(classifier.device), time.process_time()
    run_masks(data, folder / f"{name}.h5", classifier, config, run)
    return clock(classifier.device) - start, time.process_time() - cpu


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def command_seconds(data: Path, out: Path, processes: int, images: int, iterations: int, batch: int,
                    workers: int, device: str) -> tuple[float, float]:
    """Wall seconds of one ``perturb masks`` command, sharded over ``processes`` with torchrun,
    and the CPU seconds of its whole process tree."""
    masks = ["-m", "pipeline", "masks", str(data), "--out", str(out), "--limit", str(images), "-n", str(iterations),
             "-b", str(batch), "--workers", str(workers), "--device", device]
    launcher = [] if processes == 1 else ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                                          str(processes)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    start, cpu = time.perf_counter(), _children_cpu()
    done = subprocess.run([sys.executable, *launcher, *masks], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"error: the {processes}-process command failed:\n{done.stderr[-2000:]}")
    return seconds, _children_cpu() - cpu


def merge_seconds(folder: Path, shards: int, rows: int) -> float:
    """Seconds for :func:`pipeline.jobs.shards.merge_run` of ``shards`` complete synthetic shards."""
    import numpy as np

    from pipeline.distributed import Shard
    from pipeline.jobs.shards import MaskShard, merge_run
    from pipeline.store import COLUMNS, MaskWriter

    out = folder / "merge.h5"
    relpaths = [f"n00000000/{i:08d}.JPEG" for i in range(rows)]
    config = {"synthetic": True}
    generator = np.random.default_rng(0)
    for rank in range(shards):
        job = MaskShard.prepare(out, Shard(rank, shards, None, "--shard"), relpaths, config, "synthetic", False)
        with MaskWriter(job.path.with_name(out.name), config, "synthetic", folder, (1, 28, 28),
                        shard=(rank, shards), attrs=job.attrs) as writer:
            mine = np.asarray(job.indices)
            for first in range(0, len(mine), 500):
                index = mine[first:first + 500]
                columns = {name: np.zeros(len(index), dtype=np.float32) for name in COLUMNS}
                columns.update(index=index, path=[relpaths[i] for i in index], status=["ok"] * len(index),
                               reason=[""] * len(index), area=generator.random(len(index)))
                for name in ("height", "width", "label", "target"):
                    columns[name] = np.zeros(len(index), dtype=np.int64)
                writer.append(columns, generator.random((len(index), 1, 28, 28)))
    start = time.perf_counter()
    merge_run(out)
    return time.perf_counter() - start


def add_arguments(parser) -> None:
    add_images(parser, 16)
    parser.add_argument("--iterations", type=int, default=20, help="solver iterations (default 20)")
    add_batch_size(parser, 8)
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--early-stop", type=early_stop, default=(5, 0.01), metavar="WINDOW,TOL",
                        help="the early stopping of job-vs-solver's second pair (default 5,0.01)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader decoding processes of the job")
    parser.add_argument("--processes", type=int, nargs="*", default=[1, 2],
                        help="process counts of the 'processes' part (the first is its baseline; none to skip)")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument("--merge-shards", type=int, default=8)
    parser.add_argument("--merge-rows", type=int, default=8000)


def run(args, device: torch.device, results) -> int:
    base = override(preset(args.preset), [f"optim.iterations={args.iterations}"])
    stopping = override(base, stop_overrides(args.early_stop))
    common = {"device": device.type, "preset": args.preset, "images": args.images, "iterations": args.iterations,
              "batch": args.batch_size}
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if "job-vs-solver" in args.parts:
            label = f"on {args.early_stop[0]},{args.early_stop[1]:g}"
            for row in job_against_solver(args, device, base, stopping, label, folder):
                rows.append({**common, **row})
                results.write(rows)
        if "processes" in args.parts and args.processes:
            for row in processes(args, device, folder):
                rows.append({**common, **row})
                results.write(rows)
        if "merge" in args.parts:
            seconds = merge_seconds(folder, args.merge_shards, args.merge_rows)
            rows.append({**common, "part": "merge", "what": f"perturb merge, {args.merge_shards} shards",
                         "images": args.merge_rows, "iterations": "", "batch": "", "early_stop": "",
                         "processes": 1, "threads": 1, "workers": 0, "seconds": seconds,
                         "images_per_s": args.merge_rows / seconds, "steady_images_per_s": "", "ratio": "",
                         "baseline": "", "source": "synthetic 28x28 masks", "loadavg": load_average(), "date": now()})
            print(f"  merge of {args.merge_shards} shards, {args.merge_rows} rows: {seconds:.1f} s "
                  f"({args.merge_rows / seconds:.0f} rows/s)", flush=True)
    out = results.write(rows)
    print(table(rows, ["part", "what", "early_stop", "processes", "seconds", "images_per_s", "steady_images_per_s",
                       "ratio"]))
    print(f"wrote {out}")
    return 0


def job_against_solver(args, device: torch.device, base, stopping, label: str, folder: Path):
    """Rows of the solver on preloaded images against the whole job, early stopping off and on."""
    classifier = load_model("efficientnet_lite0", device=device).folded()
    images, _, source = load_images(args.images, tuple(classifier.input_size), args.data)
    images = images.to(device)
    run_config = RunConfig(batch_size=args.batch_size, workers=args.workers, limit=args.images, progress=False)
    solve(classifier, images[:2], override(base, ["optim.iterations=2"]))  # warm-up (allocator, kernels)
    basis = 1 if device.type == "cpu" else 0  # CPU seconds on a (shared) CPU, wall on a GPU
    for early, config in (("off", base), (label, stopping)):
        solver = solver_seconds(classifier, images, config, args.batch_size)
        job = job_seconds(classifier, args.data, config, run_config, folder, early.split()[0])
        for what, (seconds, cpu) in (("solver (preloaded)", solver), ("job (decode+solve+store)", job)):
            ratio = solver[basis] / (seconds, cpu)[basis]
            print(f"  early stop {early:9s} {what:26s} {seconds:7.1f} s wall, {cpu:7.1f} s CPU, "
                  f"{args.images / cpu:.3f} img/CPU-s  x{ratio:.2f} of the solver  (load {load_average()})",
                  flush=True)
            yield {"part": "job-vs-solver", "what": what, "early_stop": early,
                   "processes": 1, "threads": torch.get_num_threads(), "workers": args.workers,
                   "seconds": seconds, "cpu_seconds": cpu, "images_per_s": args.images / seconds,
                   "images_per_cpu_s": args.images / cpu, "steady_images_per_s": "",
                   "ratio": ratio, "ratio_basis": ("cpu" if basis else "wall") + " seconds",
                   "baseline": "solver", "source": source, "loadavg": load_average(), "date": now()}


def processes(args, device: torch.device, folder: Path):
    """Rows of ``perturb masks`` as one process and as torchrun shards, with their start-up estimated."""
    one = None
    for count in args.processes:
        seconds, cpu = command_seconds(args.data, folder / f"p{count}.h5", count, args.images,
                                       args.iterations, args.batch_size, 0, device.type)
        # batch 1: one image per process and no CPU padding up to --batch-size
        fixed, fixed_cpu = command_seconds(args.data, folder / f"p{count}-probe.h5", count, count, 1, 1, 0,
                                           device.type)
        steady = (args.images - count) / max(seconds - fixed, 1e-9)
        steady_cpu = (args.images - count) / max(cpu - fixed_cpu, 1e-9)  # images per CPU-second
        one = one or (steady_cpu if device.type == "cpu" else steady)
        ratio = (steady_cpu if device.type == "cpu" else steady) / one
        print(f"  {count} process(es): {seconds:7.1f} s wall, {cpu:7.1f} s CPU for the whole command; "
              f"start-up and merge {fixed:.1f} s wall, {fixed_cpu:.1f} s CPU; steady {steady:.3f} img/s, "
              f"{steady_cpu:.3f} img/CPU-s, x{ratio:.2f}  (load {load_average()})", flush=True)
        yield {"part": "processes", "what": f"perturb masks, {count} process(es)",
               "early_stop": "off", "processes": count, "threads": 1, "workers": 0,
               "seconds": seconds, "cpu_seconds": cpu, "images_per_s": args.images / seconds,
               "images_per_cpu_s": args.images / cpu, "startup_seconds": fixed,
               "startup_cpu_seconds": fixed_cpu, "steady_images_per_s": steady,
               "steady_images_per_cpu_s": steady_cpu, "ratio": ratio,
               "ratio_basis": "steady images per CPU-second" if device.type == "cpu" else "steady images per second",
               "baseline": f"{args.processes[0]} process(es)",
               "source": str(args.data), "loadavg": load_average(), "date": now()}
