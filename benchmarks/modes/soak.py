"""Soak test: resident memory of a long `perturb masks` run, recorded after every batch.

The development images are linked under ``--images`` names (``img_00000.JPEG`` ...; symbolic links
to the sorted development set, round robin) in a temporary flat folder, and ``perturb masks`` runs
over it in this process (the command line's own entry point, with the allocator setting of
``perturb``'s start unless ``--allocator default``; ``--model``: by default the tests' tiny
TorchScript net, ``tests.helpers.models.tiny_torchscript``, since the pipeline's memory is under test and a real model costs seconds per image on a
shared CPU; ``--iterations`` solver iterations,
``--batch-size`` images per batch, ``--workers`` decoding processes). After each batch is committed
to the store the script records the resident set size (``VmRSS``) of this process and the sum over
its DataLoader workers, and on a GPU ``torch.cuda.memory_allocated``/``memory_reserved``.

Growth is measured from the first 10% of the run to its end: the reference is the largest value
over the batches done by the time 10% of the images are (start-up, the first fold and the
allocator's warm-up fall before it), the end value is the largest value over the last 10% of the
batches; growth = end / reference - 1, which must stay under 5% (``--max-growth``); the mode exits 1
otherwise. Files: ``STEM.csv`` (one row per batch; default ``soak-<device>.csv``), ``STEM.png`` (the
curve) and ``STEM-summary.csv`` (the growth figures and the verdict).
"""

from __future__ import annotations

import re
import signal
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import add_batch_size, add_images, load_average
from tests.helpers.models import tiny_torchscript

NAME = "soak-{device}"
DEVICES = ("cpu", "cuda")
THREADS = 1
"""On a shared CPU one torch thread wastes least: 0.12 CPU-seconds a batch against 0.46 with two."""
DEFAULT_SETS = ["perturbation.kind=constant"]
"""The cheapest perturbation: the pipeline's memory is under test, not the solver."""


def rss_kib(pid: int | str = "self") -> int:
    """Resident set size of a process in KiB (0 when it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) if match else 0


def children() -> list[int]:
    """Process ids of this process's children (the DataLoader workers)."""
    found = []
    for task in Path("/proc/self/task").iterdir():
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def link_images(source: Path, folder: Path, count: int) -> list[Path]:
    """``count`` symbolic links ``img_NNNNN.<ext>`` to the images of ``source``, round robin."""
    from pipeline.data import discover

    originals = [r.path for r in discover(source)]
    folder.mkdir(parents=True, exist_ok=True)
    links = []
    for i in range(count):
        target = originals[i % len(originals)]
        link = folder / f"img_{i:05d}{target.suffix}"
        link.symlink_to(target)
        links.append(link)
    return links


def growth(values: list[float], done: list[int], total: int) -> tuple[float, float, float]:
    """``(reference, end, end / reference - 1)``: the reference is the largest value recorded by
    the time 10% of the images are done, the end the largest over the last 10% of the batches."""
    first = [v for v, d in zip(values, done) if d <= max(total // 10, done[0])]
    tail = values[-max(1, len(values) // 10):]
    reference, end = max(first), max(tail)
    return reference, end, end / reference - 1.0


def add_arguments(parser) -> None:
    add_images(parser, 3000, "images (symbolic links to the image folder, round robin)")
    parser.add_argument("--iterations", type=int, default=1, help="solver iterations (default 1)")
    add_batch_size(parser, 8)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader decoding processes")
    parser.add_argument("--model", default="tiny", help="'tiny' (a small TorchScript net: the pipeline's memory, "
                        "not the model's, is under test) or a model spec")
    parser.add_argument("--max-growth", type=float, default=0.05, help="growth allowed (default 0.05: 5%%)")
    parser.add_argument("--set", dest="set_", action="append", default=None,
                        help="solver override passed on (default: perturbation.kind=constant, the cheapest)")
    parser.add_argument("--allocator", choices=("retain", "default"), default="retain",
                        help="retain: glibc keeps freed memory, as the perturb command sets it "
                             "(pipeline.allocator); default: glibc's own behaviour")


def run(args, device: torch.device, results) -> int:
    from pipeline.allocator import retain_freed_memory
    from pipeline.cli import app
    from pipeline.store import MaskWriter

    retained = retain_freed_memory() if args.allocator == "retain" else False  # perturb's main() does this
    samples: list[dict] = []
    start = time.perf_counter()
    append = MaskWriter.append

    def recording_append(self, rows, masks):  # after each committed batch
        append(self, rows, masks)
        workers = sum(rss_kib(p) for p in children())
        sample = {"batch": len(samples) + 1, "images_done": len(self), "seconds": time.perf_counter() - start,
                  "rss_main_mib": rss_kib() / 1024, "rss_workers_mib": workers / 1024}
        sample["rss_total_mib"] = sample["rss_main_mib"] + sample["rss_workers_mib"]
        if device.type == "cuda":
            sample["cuda_allocated_mib"] = torch.cuda.memory_allocated(device) / 2**20
            sample["cuda_reserved_mib"] = torch.cuda.memory_reserved(device) / 2**20
        samples.append(sample)
        if len(samples) % 25 == 0:  # a run stopped early still leaves its curve so far
            results.write(samples)

    MaskWriter.append = recording_append  # type: ignore[method-assign]
    # SIGTERM ends the run like Ctrl-C (the store folds, the command returns): the curve so far is kept.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    overrides = args.set_ or DEFAULT_SETS
    try:
        with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
            folder = Path(tmp) / "images"
            link_images(args.data, folder, args.images)
            model = str(tiny_torchscript(Path(tmp) / "tiny.pt")) if args.model == "tiny" else args.model
            command = ["masks", str(folder), "--out", str(Path(tmp) / "soak.h5"), "-n", str(args.iterations),
                       "-b", str(args.batch_size), "--workers", str(args.workers), "--device", device.type,
                       "--model", model, *[f"--set={o}" for o in overrides]]
            print("perturb " + " ".join(command), flush=True)
            app(command, standalone_mode=False)
    finally:
        MaskWriter.append = append  # type: ignore[method-assign]
    wall = time.perf_counter() - start
    results.write(samples)
    done = [s["images_done"] for s in samples]
    summary = {"model": args.model, "overrides": " ".join(overrides), "threads": torch.get_num_threads(),
               "images": args.images, "images_done": done[-1], "complete": done[-1] == args.images,
               "iterations": args.iterations, "batch_size": args.batch_size, "workers": args.workers,
               "batches": len(samples), "wall_s": round(wall, 1), "allocator": args.allocator,
               "retained": retained, "loadavg_end": load_average()}
    columns = ["rss_main_mib", "rss_total_mib"] + (["cuda_allocated_mib", "cuda_reserved_mib"]
                                                   if device.type == "cuda" else [])
    verdict = True
    for column in columns:
        reference, end, rise = growth([s[column] for s in samples], done, done[-1])
        summary.update({f"{column}_ref": round(reference, 1), f"{column}_end": round(end, 1),
                        f"{column}_growth_pct": round(100 * rise, 2)})
        verdict &= rise < args.max_growth
        print(f"{column:20s} first 10%: {reference:8.1f} MiB   end: {end:8.1f} MiB   growth {100 * rise:+.2f}%")
    summary["pass"] = verdict and summary["complete"]
    results.write([summary], "summary")
    _plot(samples, columns, results.path(suffix=".png"), {**summary, "machine": results.info["machine"]})
    print(f"{len(samples)} batches, {args.images} images in {wall:.0f} s on {results.info['machine']}; "
          f"growth under {100 * args.max_growth:.0f}%: {'yes' if verdict else 'NO'}")
    return 0 if verdict else 1


def _plot(samples: list[dict], columns: list[str], path: Path, summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    done = [s["images_done"] for s in samples]
    for column in columns:
        ax.plot(done, [s[column] for s in samples], label=column.replace("_mib", ""))
    ax.axvline(summary["images_done"] / 10, color="grey", linestyle=":", label="10% of the run")
    ax.set_xlabel("images committed")
    ax.set_ylabel("MiB")
    ax.set_ylim(bottom=0)
    ax.set_title(f"perturb masks, {summary['images']} images, -n {summary['iterations']} -b "
                 f"{summary['batch_size']}: {summary['machine'][:60]}", fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
