"""What a new user waits for before `perturb masks` answers, this checkout against another.

Three waits, each timed as a whole command (``python -m pipeline ...`` in a fresh process, from
start to exit, or to the first committed batch), for the code of this checkout and for the
checkout given with ``--baseline-tree`` (for example ``git worktree add /tmp/before <commit>``),
alternating the two so both see the same machine load:

- ``bad path``: ``perturb masks <missing folder>`` until it exits with its error;
- ``complete re-run``: ``perturb masks`` on a store that already holds every image, until it exits;
- ``first batch``: ``perturb masks DATA -n 1 -b 2 --workers W`` until its first batch file is
  committed (``<store>.parts/`` gets a file);
- ``model loaded -> first batch``: in that same run, from ``pipeline.models.load_model``
  returning to the loader handing the run its first batch (the solve of it starting). The run is
  started through :data:`PROBE`, which wraps those two functions of the checkout's own code to
  write a monotonic-clock event line each; the command itself is unchanged.

Writes one row per wait and checkout to ``STEM.csv`` (default ``first-hour-cpu.csv``) with the
median of ``--repeats`` runs and the ratio against the baseline checkout.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.common import REPO, table

NAME = "first-hour-{device}"
DEVICES = ("cpu",)
THREADS = 0


def add_arguments(parser) -> None:
    parser.add_argument("--baseline-tree", type=Path, required=True,
                        help="another checkout of the project (the code before a change)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each wait per checkout (default 3)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds before a run is abandoned")
    parser.add_argument("--workers", type=int, default=2,
                        help="image-decoding processes of the first-batch run (default 2, the CLI's default)")


PROBE = """
import os, sys, time
events = os.environ["FIRST_HOUR_EVENTS"]
def mark(name):
    with open(events, "a") as f:
        f.write(f"{name} {time.monotonic():.6f}\\n")
import pipeline.models as models
import pipeline.jobs.run as jobs_run
load_model, make_loader = models.load_model, jobs_run.make_loader
def loaded(*args, **kwargs):
    classifier = load_model(*args, **kwargs)
    mark("model_loaded")
    return classifier
class Marked:
    def __init__(self, loader):
        self.loader = loader
    def __getattr__(self, name):
        return getattr(self.loader, name)
    def __len__(self):
        return len(self.loader)
    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if i == 0:
                mark("first_batch")
            yield batch
models.load_model = loaded
jobs_run.make_loader = lambda *args, **kwargs: Marked(make_loader(*args, **kwargs))
sys.argv = ["perturb", *sys.argv[1:]]
from pipeline.cli import main
main()
"""
"""Runs ``perturb`` (argv after ``-c``) with an event line when the model is loaded and when the
first batch leaves the loader. Both checkouts have ``pipeline.models.load_model`` (imported by the
commands when they run) and ``pipeline.jobs.run.make_loader``."""


def _images(folder: Path, count: int = 2) -> Path:
    """``count`` small pictures from scikit-image, written as PNGs."""
    from skimage import data as skdata

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("chelsea", "coffee", "astronaut", "rocket")[:count]:
        Image.fromarray(np.asarray(getattr(skdata, name)())).save(folder / f"{name}.png")
    return folder


def _command(tree: Path, args: list[str]) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return [sys.executable, "-m", "pipeline", *args], env


def _time_exit(tree: Path, args: list[str], timeout: float) -> float:
    command, env = _command(tree, args)
    start = time.perf_counter()
    subprocess.run(command, env=env, capture_output=True, timeout=timeout, cwd=tempfile.gettempdir())
    return time.perf_counter() - start


def _time_first_batch(tree: Path, data: Path, store: Path, workers: int, timeout: float) -> tuple[float, float]:
    """Seconds from start to the first committed batch file of a fresh store, and from the model
    being loaded to the first batch leaving the loader (NaN when the run never got there)."""
    command, env = _command(tree, ["masks", str(data), "--out", str(store), "-n", "1", "-b", "2",
                                   "--workers", str(workers), "--device", "cpu"])
    events = store.with_name(store.name + ".events")
    command[1:3] = ["-c", PROBE]  # python -c PROBE masks ... instead of python -m pipeline masks ...
    parts = store.with_name(store.name + ".parts")
    start = time.perf_counter()
    process = subprocess.Popen(command, env={**env, "FIRST_HOUR_EVENTS": str(events)}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, cwd=tempfile.gettempdir())
    total = float("nan")
    try:
        while time.perf_counter() - start < timeout:
            if (parts.is_dir() and any(parts.glob("*.h5"))) or process.poll() is not None:
                total = time.perf_counter() - start
                break
            time.sleep(0.05)
    finally:
        process.kill()
        process.wait()
    marks = dict(line.split() for line in events.read_text().splitlines()) if events.is_file() else {}
    loaded_to_batch = (float(marks["first_batch"]) - float(marks["model_loaded"])
                       if {"first_batch", "model_loaded"} <= set(marks) else float("nan"))
    return total, loaded_to_batch


def run(args, device, results) -> int:
    trees = {"this checkout": REPO, "baseline": args.baseline_tree.resolve()}
    work = Path(tempfile.mkdtemp(prefix="first-hour-"))
    try:
        data = _images(work / "images")
        times: dict[tuple[str, str], list[float]] = {}
        for tree_name, tree in trees.items():  # a complete store for each checkout's re-run
            _time_exit(tree, ["masks", str(data), "--out", str(work / f"{tree_name}.h5"), "-n", "1", "-b", "2",
                              "--workers", "0", "--device", "cpu"], args.timeout)
        for repeat in range(args.repeats):
            for tree_name, tree in trees.items():
                times.setdefault(("bad path", tree_name), []).append(
                    _time_exit(tree, ["masks", str(work / "missing"), "--out", str(work / "x.h5")], args.timeout))
                times.setdefault(("complete re-run", tree_name), []).append(
                    _time_exit(tree, ["masks", str(data), "--out", str(work / f"{tree_name}.h5"), "-n", "1", "-b", "2",
                                      "--workers", "0", "--device", "cpu"], args.timeout))
                fresh = work / f"fresh-{repeat}-{tree_name.replace(' ', '-')}.h5"
                total, loaded_to_batch = _time_first_batch(tree, data, fresh, args.workers, args.timeout)
                times.setdefault(("first batch", tree_name), []).append(total)
                times.setdefault(("model loaded -> first batch", tree_name), []).append(loaded_to_batch)
        rows = []
        for wait in ("bad path", "complete re-run", "first batch", "model loaded -> first batch"):
            base = statistics.median(times[(wait, "baseline")])
            for tree_name in trees:
                seconds = statistics.median(times[(wait, tree_name)])
                rows.append({"wait": wait, "checkout": tree_name, "workers": args.workers,
                             "seconds_median": round(seconds, 2),
                             "runs": len(times[(wait, tree_name)]), "ratio_vs_baseline": round(seconds / base, 3),
                             "tree": str(trees[tree_name])})
        print(table(rows, ["wait", "checkout", "seconds_median", "runs", "ratio_vs_baseline"]))
        print(f"wrote {results.write(rows)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0
