"""Soak test: resident memory of a long `perturb masks` run, recorded after every batch.

Run from the repository root::

    nice -n 5 .venv/bin/python benchmarks/soak.py --images 2400 --iterations 1    # 14.6 min, 2 shared cores
    .venv/bin/python benchmarks/soak.py --images 64 --out /tmp/soak       # smoke test

The development images are linked under ``--images`` names (``img_00000.JPEG`` ...; symbolic links
to the sorted development set, round robin) in a temporary flat folder, and ``perturb masks`` runs
over it in this process (the command line's own entry point, ``--model``: a tiny TorchScript net by
default, since the pipeline's memory is under test and a real model costs seconds per image on a
shared CPU; ``--iterations`` solver iterations,
``--batch-size`` images per batch, ``--workers`` decoding processes). After each batch is committed
to the store the script records the resident set size (``VmRSS``) of this process and the sum over
its DataLoader workers, and on a GPU ``torch.cuda.memory_allocated``/``memory_reserved``.

Growth is measured from the first 10% of the run to its end: the reference is the largest value
over the batches done by the time 10% of the images are (start-up, the first fold and the
allocator's warm-up fall before it), the end value is the largest value over the last 10% of the
batches; growth = end / reference - 1, which must stay under 5% (``--max-growth``). Writes
``soak-<device>.csv`` (one row per batch), ``soak-<device>.png`` (the curve) and
``soak-<device>-summary.csv`` (the machine, the growth figures and the verdict).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from _common import DEFAULT_DATA, RESULTS, load_average, machine, now, write_csv  # noqa: E402
from fuzz_inputs import tiny_model  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--iterations", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="tiny", help="'tiny' (a small TorchScript net, see "
                        "fuzz_inputs.py: the pipeline's memory, not the model's, is under test) or a model spec")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--max-growth", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (on a shared CPU one wastes least: 0.12 vs 0.46 CPU-s a batch here)")
    parser.add_argument("--set", dest="set_", action="append", default=None,
                        help="solver override passed on (default: perturbation.kind=constant, the cheapest)")
    args = parser.parse_args()

    from pipeline.cli import app
    from pipeline.store import MaskWriter

    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
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
            write_csv(args.out / f"soak-{device.type}.csv", samples)

    MaskWriter.append = recording_append  # type: ignore[method-assign]
    args.out.mkdir(parents=True, exist_ok=True)
    # SIGTERM ends the run like Ctrl-C (the store folds, the command returns): the curve so far is kept.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    load_start = load_average()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        folder = Path(tmp) / "images"
        link_images(args.data, folder, args.images)
        model = str(tiny_model(Path(tmp) / "tiny.pt")) if args.model == "tiny" else args.model
        command = ["masks", str(folder), "--out", str(Path(tmp) / "soak.h5"), "-n", str(args.iterations),
                   "-b", str(args.batch_size), "--workers", str(args.workers), "--device", args.device,
                   "--model", model, *[f"--set={o}" for o in args.set_ or ["perturbation.kind=constant"]]]
        print("perturb " + " ".join(command), flush=True)
        app(command, standalone_mode=False)
    wall = time.perf_counter() - start

    tag = device.type
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / f"soak-{tag}.csv", samples)
    done = [s["images_done"] for s in samples]
    info = machine(device)
    summary = {"date": now(), "machine": info["machine"], "torch": info["torch"], "model": args.model,
               "overrides": " ".join(args.set_ or ["perturbation.kind=constant"]),
               "threads": args.threads, "images": args.images,
               "images_done": done[-1], "complete": done[-1] == args.images,
               "iterations": args.iterations, "batch_size": args.batch_size, "workers": args.workers,
               "batches": len(samples), "wall_s": round(wall, 1), "loadavg_start": load_start,
               "loadavg_end": load_average()}
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
    write_csv(args.out / f"soak-{tag}-summary.csv", [summary])
    _plot(samples, columns, args.out / f"soak-{tag}.png", summary)
    print(f"{len(samples)} batches, {args.images} images in {wall:.0f} s on {info['machine']}; "
          f"growth under {100 * args.max_growth:.0f}%: {'yes' if verdict else 'NO'}")
    sys.exit(0 if verdict else 1)


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


if __name__ == "__main__":
    main()
