"""What a new user waits for before `perturb masks` answers, this checkout against another.

Three waits, each timed as a whole command (``python -m pipeline ...`` in a fresh process, from
start to exit, or to the first committed batch), for the code of this checkout and for the
checkout given with ``--baseline-tree`` (for example ``git worktree add /tmp/before <commit>``),
alternating the two so both see the same machine load:

- ``bad path``: ``perturb masks <missing folder>`` until it exits with its error;
- ``complete re-run``: ``perturb masks`` on a store that already holds every image, until it exits;
- ``first batch``: ``perturb masks DATA -n 1 -b 2`` until its first batch file is committed
  (``<store>.parts/`` gets a file).

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


def _time_first_batch(tree: Path, data: Path, store: Path, timeout: float) -> float:
    """Seconds from start to the first committed batch file of a fresh store."""
    command, env = _command(tree, ["masks", str(data), "--out", str(store), "-n", "1", "-b", "2",
                                   "--workers", "0", "--device", "cpu"])
    parts = store.with_name(store.name + ".parts")
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               cwd=tempfile.gettempdir())
    try:
        while time.perf_counter() - start < timeout:
            if (parts.is_dir() and any(parts.glob("*.h5"))) or process.poll() is not None:
                return time.perf_counter() - start
            time.sleep(0.05)
        return float("nan")
    finally:
        process.kill()
        process.wait()


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
                times.setdefault(("first batch", tree_name), []).append(
                    _time_first_batch(tree, data, fresh, args.timeout))
        rows = []
        for wait in ("bad path", "complete re-run", "first batch"):
            base = statistics.median(times[(wait, "baseline")])
            for tree_name in trees:
                seconds = statistics.median(times[(wait, tree_name)])
                rows.append({"wait": wait, "checkout": tree_name, "seconds_median": round(seconds, 2),
                             "runs": len(times[(wait, tree_name)]), "ratio_vs_baseline": round(seconds / base, 3),
                             "tree": str(trees[tree_name])})
        print(table(rows, ["wait", "checkout", "seconds_median", "runs", "ratio_vs_baseline"]))
        print(f"wrote {results.write(rows)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0
