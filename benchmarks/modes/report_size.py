"""How big (and how slow) a report gets for a large run: a 50,000-image run against the 16-image one.

The large run is made from an evaluated development run (``--run``, default
``results/sweep/paper``: 16 ImageNet validation images with masks, boxes and curves): its rows
are repeated under ``copy<k>/`` prefixes until ``--images`` rows (every metric jittered a little,
so the galleries and class lists pick different rows), with a mask store of as many rows and an
image folder of symbolic links to the real images, so the gallery pictures are real photographs
(drawn into each folder's ``thumbnails.parquet`` as ``perturb evaluate`` draws them).
Both reports are written with the same settings (``perturb report``'s defaults); the mode prints
and writes to ``STEM.csv`` (default ``report-size-cpu.csv``) the page size in bytes and MiB, the
number of pictures, and the seconds to write it, with the ratio of the large page's size to the
small one's (bounded galleries: about 1).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.common import REPO, load_average, table
from pipeline import write_report
from pipeline.evaluation import EvalConfig, write_pictures
from pipeline.store import COLUMNS, MaskStore, MaskWriter

NAME = "report-size-{device}"
DEVICES = ("cpu",)
THREADS = 0


def draw_thumbnails(folder: Path, store_path: Path, data_root: Path) -> None:
    """Draw the folder's pictures (``thumbnails.parquet``, which the report embeds) as ``perturb
    evaluate`` does: from its store and images, rows in store order."""
    per_image = pd.read_parquet(folder / "per_image.parquet")
    with MaskStore(store_path) as store:
        write_pictures(folder, store, per_image, dict(np.load(folder / "curves.npz")), data_root,
                       EvalConfig(workers=0), with_boxes="energy_pg" in per_image)


def with_thumbnails(run: Path, work: Path) -> Path:
    """A copy of ``run`` with its pictures drawn (a folder evaluated before evaluations drew them has none)."""
    copy = work / "small" / run.name
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("*.h5", "report.html"))
    settings = json.loads((run / "summary.json").read_text())["settings"]
    store = Path(settings["store"]) if Path(settings["store"]).is_file() else run / "masks.h5"
    draw_thumbnails(copy, store, Path(settings["data_root"]))
    return copy


def enlarge(run: Path, images: int, work: Path) -> Path:
    """A copy of ``run`` with ``images`` rows (its rows repeated), a store and an image folder."""
    table = pd.read_parquet(run / "per_image.parquet")
    table = table[table["eval_status"] == "ok"].reset_index(drop=True)
    summary = json.loads((run / "summary.json").read_text())
    settings = summary["settings"]
    source = Path(settings["data_root"])
    copies = -(-images // len(table))
    rng = np.random.default_rng(0)
    frames = []
    for k in range(copies):
        frame = table.copy()
        frame["path"] = [f"copy{k:05d}/{p}" for p in table["path"]]
        for column in frame.columns:
            if column.startswith(("deletion_auc", "insertion_auc", "energy_pg", "iou_")):
                frame[column] = frame[column] + rng.normal(0, 0.01, len(frame))
        frames.append(frame)
    big = pd.concat(frames, ignore_index=True).head(images)
    big["index"] = np.arange(len(big))
    out = work / run.name
    out.mkdir(parents=True)
    data = work / "images"
    for path in big["path"]:
        link = data / path
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(source / path.split("/", 1)[1], link)
    with MaskStore(settings["store"] if Path(settings["store"]).is_file() else run / "masks.h5") as store:
        small_masks = store.masks(np.arange(len(store))).numpy()
        rows_of = {p: store.row_of_path(p) for p in table["path"]}
        config, model, input_size = store.config, store.model, store.input_size
    order = np.asarray([rows_of[p.split("/", 1)[1]] for p in big["path"]])
    extras = [c for c in ("area", "tv") if c in big]
    with MaskWriter(out / "masks.h5", config, model, data, small_masks.shape[1:], input_size=input_size) as writer:
        for start in range(0, len(big), 5000):
            part = big.iloc[start:start + 5000]
            columns = {name: part[name].to_numpy() for name in [*COLUMNS, *extras]}
            columns["reason"] = part["reason"].fillna("").astype(str).to_numpy()
            writer.append(columns, small_masks[order[start:start + 5000]])
    big.to_parquet(out / "per_image.parquet", index=False)
    big.to_csv(out / "per_image.csv", index=False)
    settings.update(store=str(out / "masks.h5"), data_root=str(data))
    (out / "summary.json").write_text(json.dumps(summary))
    curves = dict(np.load(run / "curves.npz"))
    npz = {name: np.tile(curves[name], (copies, 1))[:images] for name in ("deletion_zero", "deletion_blur",
                                                                           "insertion")}
    np.savez_compressed(out / "curves.npz", fraction=curves["fraction"], **npz,
                        index=big["index"].to_numpy(), path=big["path"].to_numpy().astype(str))
    draw_thumbnails(out, out / "masks.h5", data)
    return out


def measure(run: Path, page: Path) -> dict:
    start = time.perf_counter()
    write_report([run], page)
    seconds = time.perf_counter() - start
    text = page.read_text()
    rows = len(pd.read_parquet(run / "per_image.parquet"))
    return {"images": rows, "bytes": page.stat().st_size, "mib": round(page.stat().st_size / 2**20, 2),
            "pictures": len(re.findall(r'src="data:image/', text)), "seconds": round(seconds, 1)}


def add_arguments(parser) -> None:
    parser.add_argument("--run", type=Path, default=REPO / "results" / "sweep" / "paper",
                        help="an evaluated run folder (default results/sweep/paper)")
    parser.add_argument("--images", type=int, default=50_000, help="rows of the enlarged run (default 50000)")


def run(args, device: torch.device, results) -> int:
    work = Path(tempfile.mkdtemp(prefix="report-size-"))
    try:
        run = with_thumbnails(args.run, work)
        measure(run, work / "warm-up.html")  # imports (torch, timm's class list) outside the timings
        small = measure(run, work / "small.html")
        big_run = enlarge(args.run, args.images, work)
        big = measure(big_run, work / "big.html")
        rows = [{"run": "development run", **small, "size_ratio_vs_small": 1.0},
                {"run": "enlarged", **big, "size_ratio_vs_small": round(big["bytes"] / small["bytes"], 3),
                 "loadavg_end": load_average()}]
        print(table(rows, ["run", "images", "bytes", "mib", "pictures", "seconds", "size_ratio_vs_small"]))
        print(f"written: {results.write(rows)}")
    finally:  # (deleting 50,000 symbolic links takes minutes on a loaded machine)
        shutil.rmtree(work, ignore_errors=True)
    return 0
