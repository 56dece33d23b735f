"""Kill a mask-store writer at random moments, many times, and count the stores that lost rows.

``tests/store/test_store.py`` kills a writer 8 times per test run; a failure that comes once in a few
hundred kills needs this longer run to show. Each trial starts a fresh store and kills a writer
(appending ``--batch-size`` rows per batch, up to ``--total`` rows, folding every ``--merge-every``
parts) three times at moments uniform in ``--window`` seconds after it is ready, resuming each
time. After every kill the store must open and read, every committed row must hold its own mask
and columns, and no earlier row may have changed. Prints kills, failures and the first errors;
writes them to ``STEM.csv`` (default ``kill-store-cpu.csv``), one row, and exits 1 when a store failed.

With ``--merge-every 0`` the writer is built without that argument, so the same run measures
older versions of :mod:`pipeline.store` (``git stash; git checkout <commit> -- pipeline/store``).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import REPO
from pipeline.store import MaskStore

NAME = "kill-store-{device}"
DEVICES = ("cpu",)
THREADS = 0

SHAPE = (1, 28, 28)

WRITER = """
import sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
from pipeline.store import MaskWriter

path, total, size, merge_every = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
extra = {"merge_every": merge_every} if merge_every else {}

def mask_of(i):
    return ((np.arange(28 * 28).reshape(1, 28, 28) + 7 * i) % 101 / 100.0).astype(np.float32)

with MaskWriter(path, {"benchmark": "kill"}, "toy", "/data", **extra) as writer:
    todo = [i for i in range(total) if i not in writer.done_indices()]
    print("ready", flush=True)
    for start in range(0, len(todo), size):
        index = todo[start:start + size]
        n = len(index)
        rows = {"index": np.asarray(index), "path": [f"img_{i}.JPEG" for i in index],
                "height": index, "width": index, "label": [1] * n, "target": [1] * n,
                "status": ["ok"] * n, "reason": [""] * n, "p_original": np.full(n, 0.5),
                "p_perturbed": np.full(n, 0.1), "p_final": np.full(n, 0.2), "loss": np.zeros(n),
                "area": np.asarray(index) / 1000}
        writer.append(rows, np.stack([mask_of(i) for i in index]))
        time.sleep(0.002)
"""


def mask_of(i: int) -> np.ndarray:
    return ((np.arange(28 * 28).reshape(SHAPE) + 7 * i) % 101 / 100.0).astype(np.float16)


def check(path: Path, before: list[int]) -> list[int]:
    """Every committed row reads and is right, and the rows before the kill are unchanged."""
    with MaskStore(path) as store:
        index = store.column("index").tolist()
        masks = store.masks().numpy()
        paths = store.column("path").tolist()
    assert len(set(index)) == len(index), "an index is stored twice"
    assert index[: len(before)] == before, "earlier rows changed"
    for row, i in enumerate(index):
        assert paths[row] == f"img_{i}.JPEG", f"row {row}: path {paths[row]!r}"
        np.testing.assert_array_equal(masks[row], mask_of(i), err_msg=f"row {row}")
    return index


def add_arguments(parser) -> None:
    parser.add_argument("--kills", type=int, default=300, help="kills in all, three per trial (default 300)")
    parser.add_argument("--total", type=int, default=2000, help="rows a writer appends when not killed")
    parser.add_argument("--batch-size", type=int, default=8, help="rows per appended batch")
    parser.add_argument("--merge-every", type=int, default=8,
                        help="parts folded at a time; 0 builds the writer without that argument (older stores)")
    parser.add_argument("--window", type=float, nargs=2, default=(0.05, 1.5), metavar=("FIRST", "LAST"),
                        help="seconds after the writer is ready between which it is killed, uniformly")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")


def run(args, device: torch.device, results) -> int:
    moments = random.Random(args.seed)
    kills, failures = 0, []
    with tempfile.TemporaryDirectory() as folder:
        for trial in range(-(-args.kills // 3)):
            path = Path(folder) / f"trial-{trial}.h5"
            command = [sys.executable, "-c", WRITER, str(REPO), str(path), str(args.total),
                       str(args.batch_size), str(args.merge_every)]
            before: list[int] = []
            for _ in range(3):
                child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
                child.stdout.readline()
                try:
                    child.wait(timeout=moments.uniform(*args.window))
                except subprocess.TimeoutExpired:
                    os.kill(child.pid, signal.SIGKILL)
                    kills += 1
                child.wait()
                child.stdout.close()
                try:
                    before = check(path, before)
                except Exception as error:  # any failure to read back counts, whatever its kind
                    failures.append(f"trial {trial}, after {len(before)} rows: {error!r}"[:300])
                    print("FAILED", failures[-1], flush=True)
                    break
    print(f"kills {kills}, stores that failed a check {len(failures)}")
    row = {"kills": kills, "trials": -(-args.kills // 3), "failed_stores": len(failures), "rows_per_batch": args.batch_size,
           "total_rows": args.total, "merge_every": args.merge_every, "seed": args.seed,
           "first_failures": " | ".join(failures[:3])}
    print(f"wrote {results.write([row])}")
    return 1 if failures else 0
