"""Fuzzed inputs: `perturb masks` over 1,000+ damaged image files and odd folder entries.

What is built (in a temporary folder, from ``--data``, the development images, each also
re-encoded small as PNG, GIF, BMP, TIFF and WebP so every decoder is exercised), ``--files``
damaged files, the kinds in turn (:data:`MUTATIONS`): bit flips anywhere or in the header,
truncation (after 1 or 2 bytes, inside the header, at the start of the JPEG scan, in the middle,
one byte short), header bytes replaced by garbage, garbage put before the file, random bytes, a
wrong magic number on a valid body, empty files, zeroed ranges, two ranges swapped, garbage after
the end, and headers edited to claim huge sizes. Then the odd entries (:func:`add_odd_entries`):
dangling symbolic links, a folder named like an image (not listed: folders are walked into; the
file-list run below names one), files with permissions 000, files whose open raises
``PermissionError`` (simulated: this benchmark runs as root, whom mode 000 does not stop), names
that are not valid UTF-8, a name with a line break, markup and a 250-byte name, a FIFO named like
an image (reading it would block), and files deleted after the listing and before decoding
(simulated by deleting them right after :func:`pipeline.data.discover`).

What is run, in a child process with a time limit (``--timeout``) and ``--threads`` torch threads (1): the command ``perturb masks DIR -n 1 -b 8 --workers 2 --set perturbation.kind=constant``
itself (the cheapest perturbation: the solver is not under test), and ``perturb masks
LIST`` over a text file that names a folder, a FIFO and a missing path. When a run fails, every
listed file is then decoded in that process to name the ones whose decoding raised. The model is the tests'
tiny TorchScript network (``--model tiny``: ``tests.helpers.models.tiny_torchscript``; the input handling under test does not depend on it;
``--model efficientnet_lite0`` runs the default one, much slower on a CPU).

Reported (printed, and in ``STEM-summary.csv``, one row per run): files listed, crashes (must be 0:
the command's exit status is 0), rows stored (must equal the files listed), skipped rows by reason,
and the rows solved; ``STEM.csv`` (default ``fuzz-inputs.csv``) lists every entry and its kind of
damage. The mode exits 1 unless every run has no crash and a row for every listed file.
"""

from __future__ import annotations

import builtins
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from io import BytesIO
from pathlib import Path

import torch

from benchmarks.common import REPO, add_batch_size, add_images, load_average

NAME = "fuzz-inputs"
DEVICES = ("cpu",)
THREADS = 1
"""In the child: on a shared CPU one thread wastes least (0.12 vs 0.46 CPU-s a batch here)."""
DEFAULT_SETS = ["perturbation.kind=constant"]
"""The cheapest perturbation: the solver is not under test."""

from tests.helpers.damage import NO_PERMISSION, VANISH, add_odd_entries, make_damaged  # noqa: E402
from tests.helpers.models import tiny_torchscript  # noqa: E402

FORMATS = {"PNG": ".png", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}


def sources(images: list[Path], small: int = 96) -> list[tuple[bytes, str]]:
    """``(bytes, extension)`` of each image as it is, and re-encoded small in every other format."""
    from PIL import Image

    found = []
    for k, path in enumerate(images):
        found.append((path.read_bytes(), path.suffix))
        fmt = list(FORMATS)[k % len(FORMATS)]
        with Image.open(path) as img:
            img.thumbnail((small, small))
            buffer = BytesIO()
            img.convert("RGB").save(buffer, fmt)
        found.append((buffer.getvalue(), FORMATS[fmt]))
    return found


# ---------------------------------------------------------------- the run (in a child process)

def simulate_faults() -> None:
    """Patch this process (and the DataLoader workers it forks): opening a ``noperm`` file raises
    PermissionError; files named ``vanish`` are deleted once :func:`pipeline.data.discover` has
    listed them."""
    import pipeline.jobs.run

    real_open, real_discover = builtins.open, pipeline.jobs.run.discover

    def guarded_open(file, *args, **kwargs):
        named = isinstance(file, (str, bytes, os.PathLike))  # not a descriptor
        if named and NO_PERMISSION in os.fsdecode(file):
            raise PermissionError(13, "Permission denied (simulated)", os.fsdecode(file))
        return real_open(file, *args, **kwargs)

    def discover_then_delete(*args, **kwargs):
        records = real_discover(*args, **kwargs)
        for record in records:
            if VANISH in record.path.name:
                record.path.unlink(missing_ok=True)
        return records

    builtins.open = guarded_open
    pipeline.jobs.run.discover = discover_then_delete


def child(source: Path, out: Path, model: str, batch: int, workers: int, threads: int,
          overrides: list[str]) -> None:
    """Run the command; when it fails, decode every listed file in this process to name the files
    whose decoding raised (an exception escaping :class:`pipeline.data.ImageDataset`)."""
    import traceback

    import torch

    from pipeline.cli import app
    from pipeline.data import ImageDataset, discover

    torch.set_num_threads(threads)
    simulate_faults()
    records = discover(source)
    command = ["masks", str(source), "--out", str(out), "-n", "1", "-b", str(batch), "--workers", str(workers),
               "--device", "cpu", "--model", model, *[f"--set={o}" for o in overrides]]
    print("perturb " + " ".join(command), flush=True)
    try:
        status = app(command, standalone_mode=False)
    except SystemExit as stop:
        status = stop.code
    except Exception:  # noqa: BLE001 - a crash of the command is what is counted
        traceback.print_exc()
        status = "exception"
    crashes = []
    if status:
        for i in range(len(records)):
            try:
                ImageDataset(records, (32, 32))[i]
            except Exception:  # noqa: BLE001
                crashes.append({"path": repr(records[i].relpath), "traceback": traceback.format_exc()})
    print("RESULT " + json.dumps({"listed": len(records), "decode_crashes": crashes, "exit": status or 0}),
          flush=True)


def run_child(source: Path, out: Path, model: str, batch: int, workers: int, threads: int, timeout: float,
              overrides: list[str]) -> dict:
    """Run :func:`child` in a fresh interpreter; ``{"listed", "decode_crashes", "exit", "output"}``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "benchmarks.modes.fuzz", "--child", str(source), str(out), model, str(batch),
               str(workers), str(threads), *overrides]
    try:
        done = subprocess.run(command, capture_output=True, timeout=timeout, env=env, cwd=REPO)
    except subprocess.TimeoutExpired as expired:
        return {"listed": -1, "decode_crashes": [], "exit": "timeout",
                "output": (expired.stderr or b"").decode(errors="replace")[-3000:]}
    text = done.stdout.decode(errors="replace")
    line = next((l for l in text.splitlines() if l.startswith("RESULT ")), None)
    result = json.loads(line[7:]) if line else {"listed": -1, "decode_crashes": [], "exit": done.returncode}
    result["exit"] = result["exit"] if done.returncode == 0 else done.returncode
    result["output"] = done.stderr.decode(errors="replace")[-3000:]
    return result


def stored_rows(store: Path) -> tuple[int, Counter, int]:
    """``(rows, skipped by reason, rows solved)`` of a store (0 rows when it is missing)."""
    from pipeline.store import MaskStore

    if not store.exists():
        return 0, Counter(), 0
    with MaskStore(store) as opened:
        table = opened.table()
    skipped = table[table["status"] == "skipped"]
    return len(table), Counter(skipped["reason"]), int((table["status"] == "ok").sum())


def add_arguments(parser) -> None:
    parser.add_argument("--files", type=int, default=1100, help="damaged files (odd entries come on top)")
    add_images(parser, 100, "development images the damaged files are made from")
    parser.add_argument("--model", default="tiny", help="'tiny' (a small TorchScript net) or a model spec")
    add_batch_size(parser, 8)
    parser.add_argument("--set", dest="set_", action="append", default=None,
                        help="solver override passed on (default: perturbation.kind=constant, the cheapest)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader decoding processes of the runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds each run may take")


def run(args, device: torch.device, results) -> int:
    from pipeline import discover

    overrides = args.set_ or DEFAULT_SETS
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        tmp = Path(tmp)
        model = str(tiny_torchscript(tmp / "tiny.pt")) if args.model == "tiny" else args.model
        images = sorted(r.path for r in discover(args.data, limit=args.images))
        originals = sources(images)
        folder = tmp / "fuzz"
        kinds = make_damaged(folder, originals, args.files, args.seed)
        kinds.update(add_odd_entries(folder, images[0].read_bytes()))
        walked = sum(1 for _, _, files in os.walk(folder) for f in files
                     if os.path.splitext(f)[1].lower() in {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif",
                                                           ".tiff", ".webp"})
        listing = folder / "list.txt"  # not an image: the folder run does not list it
        listing.write_text(f"a_folder.JPEG\nfifo.JPEG\nmissing.JPEG\n{sorted(kinds)[0]}\n")
        print(f"{len(kinds)} entries ({args.files} damaged files) in {folder}", flush=True)
        runs = []
        for name, source in (("folder", folder), ("file list", listing)):
            store = tmp / f"{name.replace(' ', '_')}.h5"
            result = run_child(source, store, model, args.batch_size, args.workers, args.threads or 1, args.timeout,
                               overrides)
            rows, reasons, solved = stored_rows(store)
            crashes = len(result["decode_crashes"]) + (0 if result["exit"] == 0 else 1)
            runs.append({"input": name, "listed": result["listed"], "crashes": crashes, "rows": rows,
                         "rows_equal_listed": rows == result["listed"], "solved": solved,
                         "skipped": sum(reasons.values()),
                         "skipped_by_reason": json.dumps(dict(sorted(reasons.items()))),
                         "model": args.model, "overrides": " ".join(overrides), "damaged_files": args.files,
                         "seed": args.seed, "files_walked": walked, "loadavg_end": load_average()})
            if crashes:
                print(result["output"])
                for crash in result["decode_crashes"][:5]:
                    print(crash["path"], crash["traceback"])
        results.write(runs, "summary")
        results.write([{"name": ascii(n), "kind": k} for n, k in sorted(kinds.items())])
    for entry in runs:
        print(f"{entry['input']:9s}: {entry['listed']} listed, {entry['crashes']} crashes, {entry['rows']} rows "
              f"({'= listed' if entry['rows_equal_listed'] else 'NOT equal to listed'}), {entry['solved']} solved, "
              f"skipped {entry['skipped_by_reason']}")
    ok = all(r["crashes"] == 0 and r["rows_equal_listed"] for r in runs)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:  # the run itself, in a fresh interpreter
    source, out, model, batch, workers, threads, *overrides = sys.argv[2:]
    child(Path(source), Path(out), model, int(batch), int(workers), int(threads), overrides)
