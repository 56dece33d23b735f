"""What keeping freed memory (``pipeline.allocator.retain_freed_memory``, applied by ``perturb`` at
start) changes for a CPU solve: glibc's default against the setting, each in a fresh process.

Each child process loads the model (BatchNorm folded, as ``perturb masks`` solves), warms up on one
image, then solves ``--images`` development images (or scikit-image pictures) with each preset for
``--iterations`` iterations and reports the wall seconds, the user and system CPU seconds, the
minor page faults and the peak resident memory of that solve. The two settings alternate for
``--repeats`` rounds; the table gives each one's median and the ratio of the default's wall time
to the setting's (above 1: the setting is faster). The masks of both are compared: the allocator
must not change a result.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

from benchmarks.common import REPO, add_images, load_average, table

NAME = "allocator-{device}"
DEVICES = ("cpu",)
THREADS = 2

_CHILD = r"""
import hashlib, json, resource, sys, time
import torch
from benchmarks.common import load_images
from pipeline.allocator import retain_freed_memory
from pipeline.config import resolve
from pipeline.models import load_model
from pipeline.solve import solve

retain, preset, iterations, count, threads = sys.argv[1] == "retain", sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
applied = retain_freed_memory() if retain else False
torch.set_num_threads(threads)
classifier = load_model("efficientnet_lite0").folded()
images = load_images(count)[0]
config = resolve(preset, [], iterations=iterations)
solve(classifier, images[:1], resolve(preset, [], iterations=1))
before = resource.getrusage(resource.RUSAGE_SELF)
start = time.perf_counter()
result = solve(classifier, images, config)
wall = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"applied": applied, "wall_s": wall, "user_s": after.ru_utime - before.ru_utime,
                  "sys_s": after.ru_stime - before.ru_stime, "minor_faults": after.ru_minflt - before.ru_minflt,
                  "peak_rss_mib": after.ru_maxrss // 1024,
                  "masks_sha256": hashlib.sha256(result.masks.numpy().tobytes()).hexdigest()[:16]}))
"""


def add_arguments(parser) -> None:
    add_images(parser, 8)
    parser.add_argument("--preset", nargs="+", default=["paper-fast", "extremal"], help="presets solved")
    parser.add_argument("--iterations", type=int, default=40, help="iterations of each solve (default 40)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of both settings (default 2)")


def child(setting: str, preset: str, iterations: int, images: int, threads: int) -> dict:
    """One measured solve in a fresh process; the environment without glibc's MALLOC_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(OMP_NUM_THREADS=str(threads), PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", _CHILD, setting, preset, str(iterations), str(images), str(threads)],
                          cwd=REPO, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(args, device, results) -> int:
    threads = args.threads or os.cpu_count() or 1
    rows, summary = [], []
    for preset in args.preset:
        measured = {"default": [], "retain": []}
        for repeat in range(args.repeats):
            for setting in ("default", "retain") if repeat % 2 == 0 else ("retain", "default"):
                got = child(setting, preset, args.iterations, args.images, threads)
                measured[setting].append(got)
                rows.append({"preset": preset, "setting": setting, "repeat": repeat, "images": args.images,
                             "iterations": args.iterations, "threads": threads, **got, "loadavg_row": load_average()})
                results.write(rows, "runs")
        same = len({r["masks_sha256"] for r in measured["default"] + measured["retain"]}) == 1
        med = {s: {k: statistics.median(r[k] for r in runs) for k in ("wall_s", "sys_s", "minor_faults",
                                                                        "peak_rss_mib")}
               for s, runs in measured.items()}
        summary.append({"preset": preset, "images": args.images, "iterations": args.iterations, "threads": threads,
                        "default_wall_s": med["default"]["wall_s"], "retain_wall_s": med["retain"]["wall_s"],
                        "ratio": med["default"]["wall_s"] / med["retain"]["wall_s"],
                        "default_sys_s": med["default"]["sys_s"], "retain_sys_s": med["retain"]["sys_s"],
                        "default_faults": med["default"]["minor_faults"], "retain_faults": med["retain"]["minor_faults"],
                        "default_peak_mib": med["default"]["peak_rss_mib"],
                        "retain_peak_mib": med["retain"]["peak_rss_mib"], "same_masks": same,
                        "applied": all(r["applied"] for r in measured["retain"]), "loadavg_row": load_average()})
        path = results.write(summary)
    print(table(summary, ["preset", "images", "iterations", "default_wall_s", "retain_wall_s", "ratio",
                          "default_sys_s", "retain_sys_s", "default_peak_mib", "retain_peak_mib", "same_masks"]))
    print(f"wrote {path} and {results.path('runs')}")
    return 0 if all(row["same_masks"] and row["applied"] for row in summary) else 1
