"""Amortised masks (issue 26): a mask predictor trained on sample images, then refinement.

Run from the repository root (each mode resumes where a killed run stopped)::

    B="nice -n 10 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/amortise.py"
    $B arch --work runs/amortise                 # the predictor's architecture, by a small measurement
    $B train --work runs/amortise --images 480 --epochs 3
    $B pilot --work runs/amortise                # how to refine a predicted start (held-out samples)
    $B curve --work runs/amortise --images 100   # the quality curve on the development images

Images. Training: ``imagenet-samples-1000`` (one per class, labels from the folders), minus every
25th image (from the 13th), which are held out (``pilot``, ``arch``); ``train --images N`` takes N
of the other 960, evenly spread over the classes. Evaluation: the first ``--images`` development
images (``imagenet-val-100``, sorted), never trained on, each explaining its **label** class with
seed = its index, as ``perturb masks --target label`` does.

``arch``: the ``features`` head against the ``pixels`` encoder-decoder, each trained by the
objective on the same held-in images and epochs; the mean noise-free objective ``J`` (``l1 * |1-m|
+ tv * TV(m) + p``, the preset's final weights) of their masks on held-out images, beside the
paper's uniform random start.

``pilot``: refinement variants (iterations, step size, L1 warm-up) started from the predictor, on
16 held-out samples, against ``paper-fast`` solved there: per image ``J``, ``p_final``, ``area``,
paired differences and their standard errors.

``curve``: one warm solve of ``max(--cuts)`` iterations per batch, with the masks copied at every
cut (0 = the predictor alone), each cut written to a store of ``--work``, then every store scored by
:func:`pipeline.evaluation.evaluate_store` (deletion AUC on both substrates, insertion AUC,
localisation with the boxes) beside ``paper-fast`` (``--paper-fast``, a store of the same images) and
``paper`` (``--paper``, the images it has), and Grad-CAM (a baseline store made here). Per cut: the
means, and the paired differences from ``paper-fast`` and ``paper`` with standard errors and the
verdict of ``benchmarks/iteration_budget.py`` (no AUC worse by more than 0.005; ``p_final`` and
``area`` no worse than two standard errors). The cost per image of a 50,000-image run: refinement
iterations, plus the predictor's forward pass (in solver iterations, as timed here), plus the
training's image-steps (each about one solver iteration) spread over 50,000 images.

Writes ``results/benchmarks/amortise-<mode>-<device>.csv`` (and ``...-per-image.csv``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, clock, load_average, machine, now, pick_device, table, write_csv  # noqa: E402

from pipeline.amortise import (PredictorConfig, TrainConfig, init_record, load_predictor, predict_masks,  # noqa: E402
                               train_predictor, warm_config)
from pipeline.config import override, preset, to_dict  # noqa: E402
from pipeline.data import ImageDataset, collate, discover  # noqa: E402
from pipeline.models import load_model  # noqa: E402
from pipeline.solve import solve  # noqa: E402
from pipeline.solve import masks as masklib  # noqa: E402
from pipeline.solve.problem import Problem, final_scores, initial_masks, p_perturbed  # noqa: E402

from iteration_budget import LOWER_IS_BETTER, METRICS, paired  # noqa: E402

# The shared data beside the checkout (or beside the folder holding worktrees), or inside it.
_REPO = Path(__file__).resolve().parents[1]
DATA = next((p for p in (_REPO.parent / "shared" / "data", _REPO.parents[1] / "shared" / "data",
                         _REPO / "shared" / "data") if (p / "imagenet-val-100").is_dir()), _REPO / "shared" / "data")
SAMPLES = DATA / "imagenet-samples-1000"
DEV = DATA / "imagenet-val-100"
PRESET = "paper-fast"
RUN_IMAGES = 50_000
LOC = ("loc_value_0.1_tight", "loc_energy_0.95_tight", "loc_mean_0.5_tight")


# ---------------------------------------------------------------- images

def sample_split(work: Path) -> dict[str, Path]:
    """List files of the sample images: ``train`` (960), and the held-out every 25th from the 13th:
    ``pilot`` (its first 16) and ``archeval`` (the other 24)."""
    files = sorted(str(p) for p in SAMPLES.rglob("*") if p.is_file())
    heldout = files[12::25]
    train = [f for f in files if f not in set(heldout)]
    work.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, items in (("train", train), ("pilot", heldout[:16]), ("archeval", heldout[16:])):
        out[name] = work / f"{name}.txt"
        out[name].write_text("\n".join(items) + "\n")
    return out


def spread(path: Path, count: int, work: Path, name: str) -> Path:
    """A list of ``count`` of the images listed in ``path``, evenly spread."""
    items = path.read_text().split()
    count = min(count, len(items))
    chosen = [items[i * len(items) // count] for i in range(count)]
    out = work / f"{name}-{count}.txt"
    out.write_text("\n".join(chosen) + "\n")
    return out


def load(listing: Path | str, size, limit: int | None = None):
    """``(images (N, 3, H, W), labels (N,), records)`` of a list file or folder."""
    records = discover(listing, limit=limit)
    batch = collate([ImageDataset(records, size)[i] for i in range(len(records))])
    if not bool(batch["ok"].all()):
        raise SystemExit(f"unreadable images in {listing}")
    return batch["image"], batch["label"], records


# ---------------------------------------------------------------- scores

def noise_free_objective(problem: Problem, masks: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``(J, p_final, area)`` per image ``(B,)`` of masks ``(B, 1, h, w)``: the preset's objective at
    its final L1 weight, without jitter or noise."""
    objective = problem.config.objective
    p_final, area, tv = final_scores(problem, masks)
    sparsity = masklib.sparsity(masks, objective)
    return objective.l1_coeff * sparsity + objective.tv_coeff * tv + p_final, p_final, area


def solve_with_cuts(classifier, images, config, cuts, seeds, targets, init):
    """One solve of ``max(cuts)`` iterations from ``init`` (None: the preset's start); the masks
    ``(B, 1, h, w)`` after each cut's iterations (cut 0: the start)."""
    holder, snaps = {}, {}
    wanted = set(cuts)

    def hook(optimizer, args, kwargs):
        holder.setdefault("masks", optimizer.param_groups[0]["params"][0])

    def callback(iteration, loss):
        if iteration + 1 in wanted:
            snaps[iteration + 1] = holder["masks"].detach().clone()

    handle = register_optimizer_step_post_hook(hook)
    try:
        longest = max(cuts)
        if longest:
            solve(classifier, images, override(config, [f"optim.iterations={longest}"]), targets=targets, seeds=seeds,
                  callback=callback, init=init)
    finally:
        handle.remove()
    if 0 in wanted:
        snaps[0] = init.clamp(0, 1)
    return snaps


def summarise_pairs(rows: list[dict], reference: list[dict], metrics) -> dict:
    """Paired means and the iteration-budget verdict of ``rows`` against ``reference`` (same images)."""
    out, verdict = {}, []
    for metric in metrics:
        diff, error = paired(rows, reference, metric)
        out[f"diff_{metric}"], out[f"se_{metric}"] = diff, error
        worse = diff if metric in LOWER_IS_BETTER else -diff
        verdict.append(worse <= (0.005 if "auc" in metric else 2 * error))
    out["same_quality"] = all(verdict)
    return out


# ---------------------------------------------------------------- modes

def mode_arch(args, classifier, info) -> None:
    lists = sample_split(args.work)
    train = spread(lists["train"], args.images, args.work, "arch-train")
    solver = preset(PRESET)
    images, labels, _ = load(lists["archeval"], classifier.input_size)
    seeds = torch.arange(len(images))
    problem = Problem(classifier, images, labels, solver, seeds)
    start_j, start_p, start_a = noise_free_objective(problem, initial_masks(problem))  # the paper's start
    rows = [{"variant": "uniform start", "J": float(start_j.mean()), "p_final": float(start_p.mean()),
             "area": float(start_a.mean()), "J_se": float(start_j.std() / len(start_j) ** 0.5),
             "train_seconds": 0.0}]
    for arch in ("features", "pixels"):
        out = args.work / f"arch-{arch}.pt"
        began = clock(classifier.device)
        summary = train_predictor(train, out, classifier, PRESET, args.epochs, progress=not args.quiet,
                                  config=TrainConfig(predictor=PredictorConfig(arch=arch)))
        seconds = clock(classifier.device) - began
        predictor = load_predictor(out, classifier)
        masks, _ = predict_masks(predictor, classifier, images, solver, labels)
        j, p, a = noise_free_objective(problem, masks)
        rows.append({"variant": f"{arch} head", "J": float(j.mean()), "p_final": float(p.mean()),
                     "area": float(a.mean()), "J_se": float(j.std() / len(j) ** 0.5), "train_seconds": seconds,
                     "train_images": summary.images, "epochs": summary.epochs,
                     "parameters": sum(t.numel() for t in predictor.parameters()), "predictor": summary.identity})
    for row in rows:
        row.update(machine=info["machine"], date=now(), loadavg=load_average(), heldout=len(images))
    write_csv(RESULTS / f"{args.out}-{classifier.device.type}.csv", rows)
    print(table(rows, ["variant", "J", "J_se", "p_final", "area", "train_seconds", "parameters"]))


def mode_train(args, classifier, info) -> None:
    lists = sample_split(args.work)
    listing = args.train_list or spread(lists["train"], args.images, args.work, "train")
    solved = None
    if args.loss != "objective":
        solved = args.solved
    began = clock(classifier.device)
    config = TrainConfig(loss=args.loss, batch_size=args.batch, lr=args.train_lr, checkpoint_every=25)
    tag = f"-from-{load_predictor(args.start).identity}" if args.start else ""
    out = args.predictor or args.work / f"predictor-{args.loss}-{args.images}x{args.epochs}{tag}.pt"
    summary = train_predictor(listing, out, classifier, PRESET, args.epochs, config=config, solved=solved,
                              start=args.start, progress=not args.quiet)
    print("\n".join(summary.lines()), f"({clock(classifier.device) - began:.0f} s)")


def mode_pilot(args, classifier, info) -> None:
    from pipeline.store import MaskStore

    lists = sample_split(args.work)
    images, labels, records = load(lists["pilot"], classifier.input_size, limit=args.images)
    seeds = torch.arange(len(images))
    base = preset(PRESET)
    with MaskStore(args.reference) as store:  # paper-fast solved on these images (perturb masks --target label)
        ref_masks = store.masks([store.row_of_path(r.relpath) for r in records])
    problem = Problem(classifier, images, labels, base, seeds)
    reference_rows = _pilot_rows(*noise_free_objective(problem, ref_masks))
    if str(args.predictor) == "oracle":  # the reference's own masks as the start: what a perfect predictor gives
        identity, start = "oracle", ref_masks.clamp(0, 1)
    else:
        predictor = load_predictor(args.predictor, classifier)
        identity, (start, _) = predictor.identity, predict_masks(predictor, classifier, images, base, labels,
                                                                  extents=args.extents)
    rows = []
    for text in args.variants:  # NAME[:KEY=VALUE...]; cold-N: the preset from its own start, N iterations
        name, *sets = text.split(":")
        l1_start = float(next((s.split("=")[1] for s in sets if s.startswith("l1_start=")), 1.0))
        config = override(base, [s for s in sets if not s.startswith("l1_start=")])
        if name.startswith("cold"):
            count = int(name.split("-")[1])
            cfg = override(config, [f"optim.iterations={count}", f"objective.l1_decay={count}"])
            cuts, init = [count], None
        else:
            cfg = warm_config(config, iterations=max(args.cuts), l1_start=l1_start, lr=config.optim.lr)
            cuts, init = args.cuts, start
        began = clock(classifier.device)
        snaps = solve_with_cuts(classifier, images, cfg, cuts, seeds, labels, init)
        seconds = clock(classifier.device) - began
        for cut, masks in sorted(snaps.items()):
            per = _pilot_rows(*noise_free_objective(problem, masks))
            row = {"variant": f"{name}@{cut}", "iterations": cut, "solve_seconds": seconds, "images": len(images)}
            for metric in ("J", "p_final", "area"):
                row[f"mean_{metric}"] = sum(r[metric] for r in per) / len(per)
            row.update(summarise_pairs(per, reference_rows, ("J", "p_final", "area")))
            rows.append(row)
            print(row["variant"], {k: round(v, 5) for k, v in row.items() if k.startswith(("mean_", "diff_"))},
                  flush=True)
    ref = {"variant": "paper-fast@75", "iterations": 75, "images": len(images)}
    for metric in ("J", "p_final", "area"):
        ref[f"mean_{metric}"] = sum(r[metric] for r in reference_rows) / len(reference_rows)
    rows.insert(0, ref)
    for row in rows:
        row.update(machine=info["machine"], date=now(), loadavg=load_average(), predictor=identity)
    write_csv(RESULTS / f"{args.out}-{classifier.device.type}.csv", rows)
    print(table(rows, ["variant", "mean_J", "diff_J", "se_J", "mean_area", "diff_area", "mean_p_final",
                       "diff_p_final", "same_quality"]))


def _pilot_rows(j, p, a) -> list[dict]:
    return [{"J": float(j[i]), "p_final": float(p[i]), "area": float(a[i])} for i in range(len(j))]


def mode_curve(args, classifier, info) -> None:
    from pipeline.jobs.baselines import run_baseline
    from pipeline.jobs.run import EXTRA_COLUMNS, RunConfig, batch_rows
    from pipeline.store import MaskWriter

    predictor = load_predictor(args.predictor, classifier)
    base = preset(PRESET)
    cuts = sorted(set(args.cuts))
    config = warm_config(base, iterations=max(cuts), l1_start=args.l1_start, lr=args.lr)
    records = discover(DEV / "val", classifier.vocabulary, limit=args.images)
    run = RunConfig(target="label", batch_size=args.batch, workers=0, limit=args.images)
    tag = f"{predictor.identity}-{config.optim.lr:g}-{args.l1_start:g}-{len(args.extents)}"
    stores = {cut: args.work / f"curve-{tag}-{cut}.h5" for cut in cuts}
    writers = {}
    for cut, path in stores.items():
        store_config = {"solver": to_dict(config), "model": classifier.spec, "target": "label", "seed": 0,
                        "input_size": list(classifier.input_size), "cut": cut,
                        "init": init_record(predictor, args.extents)}
        writers[cut] = MaskWriter(path, store_config, classifier.spec, (DEV / "val").resolve(), (1, 28, 28),
                                  input_size=classifier.input_size)
    dataset = ImageDataset(records, classifier.input_size)
    predict_seconds = solve_seconds = 0.0
    try:
        done = set.intersection(*(w.done_indices() for w in writers.values()))
        todo = [i for i in range(len(records)) if i not in done]
        for start in range(0, len(todo), args.batch):
            batch = collate([dataset[i] for i in todo[start:start + args.batch]])
            rows, ok = batch_rows(batch, records, run, EXTRA_COLUMNS)
            chosen = ok.nonzero()[:, 0]
            images, targets, seeds = batch["image"][chosen], batch["label"][chosen], batch["index"][chosen]
            began = clock(classifier.device)
            init, _ = predict_masks(predictor, classifier, images, config, targets, extents=args.extents)
            predict_seconds += clock(classifier.device) - began
            snaps = solve_with_cuts(classifier, images, config, cuts, seeds, targets, init)
            solve_seconds += clock(classifier.device) - began
            problem = Problem(classifier, images, targets, config, seeds)
            for cut in cuts:
                j, p_final, area = noise_free_objective(problem, snaps[cut])
                _, _, tv = final_scores(problem, snaps[cut])
                cut_rows = {k: (v.clone() if torch.is_tensor(v) else list(v)) for k, v in rows.items()}
                masks = torch.full((len(ok), 1, 28, 28), float("nan"))
                masks[chosen] = snaps[cut].cpu()
                for name, values in (("target", targets), ("p_original", problem.p_original), ("p_final", p_final),
                                     ("loss", j), ("area", area), ("tv", tv),
                                     ("p_perturbed", p_perturbed(problem))):
                    cut_rows[name][chosen] = values.to("cpu", cut_rows[name].dtype)
                writers[cut].append(cut_rows, masks)
            print(f"curve: {start + len(chosen)}/{len(todo)} images", flush=True)
    finally:
        for writer in writers.values():
            writer.close()
    gradcam = args.work / "gradcam.h5"
    if not _complete(gradcam, len(records)):
        run_baseline("gradcam", DEV / "val", gradcam, classifier, run)
    evaluated = {f"amortised@{cut}": _evaluate(stores[cut], classifier, args) for cut in cuts}
    evaluated["gradcam"] = _evaluate(gradcam, classifier, args)
    evaluated["paper-fast"] = _evaluate(args.paper_fast, classifier, args)
    if args.paper and Path(args.paper).exists():
        evaluated["paper"] = _evaluate(args.paper, classifier, args)
    _curve_report(args, classifier, info, predictor, evaluated, cuts, len(records), predict_seconds, solve_seconds)


def _complete(path: Path, count: int) -> bool:
    from pipeline.store import MaskStore

    if not path.exists():
        return False
    with MaskStore(path) as store:
        return len(store) >= count


def _evaluate(path, classifier, args, chunk: int = 20) -> dict[int, dict]:
    """Per-image metrics of a store's first ``--images`` images, by image index, evaluated ``chunk``
    images at a time, each chunk cached in ``--work`` (a killed run keeps the chunks it finished)."""
    import pandas as pd

    from pipeline.evaluation import EvalConfig, evaluate_store
    from pipeline.store import MaskStore

    with MaskStore(path) as store:
        key = f"{store.run_key}-{len(store)}"
    whole = args.work / "eval" / f"{Path(path).stem}-{key}-{args.images}"  # evaluated in one go
    if (whole / "per_image.csv").exists():
        frame = pd.read_csv(whole / "per_image.csv")
        return {int(r["index"]): r for r in frame[frame["eval_status"] == "ok"].to_dict("records")}
    rows = {}
    for start in range(0, args.images, chunk):
        out = args.work / "eval" / f"{Path(path).stem}-{key}-{start}-{start + chunk}"
        if not (out / "per_image.csv").exists():
            evaluate_store(path, None, classifier, out, boxes=DEV / "bbox",
                           indices=range(start, min(start + chunk, args.images)),
                           config=EvalConfig(workers=0, plots=False), progress=not args.quiet)
        frame = pd.read_csv(out / "per_image.csv")
        frame = frame[frame["eval_status"] == "ok"]
        rows.update({int(r["index"]): r for r in frame.to_dict("records")})
    return rows


def training_iterations(meta: dict, per_iteration: float, train_seconds: float | None) -> float:
    """The predictor's training cost in solver image-iterations: the solves of the masks it regressed
    on (images x the iterations each store ran), plus the training itself: its image-steps when it
    scored the objective (each about one solver iteration), its wall time in solver iterations
    when it only regressed on cached features."""
    from pipeline.store import MaskStore

    solved = 0.0
    for entry in meta.get("solved") or []:
        with MaskStore(entry["store"]) as store:
            solved += entry["images"] * store.config["solver"]["optim"]["iterations"]
    if meta["training"]["loss"] != "regression":
        return solved + meta["image_steps"]
    seconds = meta.get("seconds", train_seconds)
    return solved + (seconds / per_iteration if seconds and per_iteration else float("nan"))


def _curve_report(args, classifier, info, predictor, evaluated, cuts, count, predict_seconds, solve_seconds) -> None:
    meta = predictor.meta
    per_image, summary = [], []
    per_iteration = solve_seconds and max(cuts) and (solve_seconds - predict_seconds) / (count * max(cuts))
    predictor_cost = predict_seconds / count / per_iteration if per_iteration else float("nan")
    training_cost = training_iterations(meta, per_iteration, args.train_seconds) / RUN_IMAGES
    metrics = (*METRICS, *LOC, "pointing_hit")
    for name, rows in evaluated.items():
        for index, row in sorted(rows.items()):
            per_image.append({"variant": name, "image": index, **{m: row.get(m) for m in ("target", *metrics)}})
    for name, rows in evaluated.items():
        out = {"variant": name, "images": len(rows)}
        cut = int(name.split("@")[1]) if "@" in name else None
        out["refine_iterations"] = cut if cut is not None else ""
        if cut is not None:
            out["iterations_per_image"] = cut + predictor_cost + training_cost
        for metric in metrics:
            values = [r[metric] for r in rows.values() if r.get(metric) == r.get(metric)]
            out[f"mean_{metric}"] = sum(values) / len(values) if values else float("nan")
        for reference in ("paper-fast", "paper"):
            if reference not in evaluated or reference == name:
                continue
            common = sorted(set(rows) & set(evaluated[reference]))
            used = [m for m in METRICS if name != "gradcam" or "auc" in m]
            pairs = summarise_pairs([rows[i] for i in common], [evaluated[reference][i] for i in common], used)
            out.update({f"{k}_vs_{reference}": v for k, v in pairs.items()})
            out[f"images_vs_{reference}"] = len(common)
        summary.append(out)
    for row in summary:
        row.update(machine=info["machine"], torch=info["torch"], date=now(), loadavg=load_average(),
                   predictor=predictor.identity, train_images=meta["images"]["count"], epochs=meta["epochs"],
                   train_image_steps=meta["image_steps"], predictor_cost_iterations=predictor_cost,
                   training_iterations=training_cost * RUN_IMAGES, seconds_per_iteration=per_iteration,
                   refine_lr=args.lr, refine_l1_start=args.l1_start)
    write_csv(RESULTS / f"{args.out}-{classifier.device.type}.csv", summary)
    write_csv(RESULTS / f"{args.out}-{classifier.device.type}-per-image.csv", per_image)
    columns = ["variant", "images", "iterations_per_image", "mean_deletion_auc_blur", "mean_deletion_auc_zero",
               "mean_insertion_auc", "mean_p_final", "mean_area", "mean_loc_energy_0.95_tight",
               "same_quality_vs_paper-fast", "same_quality_vs_paper"]
    print(f"{info['machine']}; predictor {predictor.identity} ({meta['images']['count']} images x {meta['epochs']} "
          f"epochs); predictor pass = {predictor_cost:.2f} solver iterations")
    print(table(summary, columns))
    print(table(summary, ["variant", *[f"diff_{m}_vs_paper-fast" for m in METRICS]]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["arch", "train", "pilot", "curve"])
    parser.add_argument("--work", type=Path, required=True, help="folder for lists, predictors, stores")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--loss", default="objective", choices=["objective", "regression", "both"])
    parser.add_argument("--solved", type=Path, nargs="*", default=None,
                        help="train: stores of solved masks (regression)")
    parser.add_argument("--train-list", type=Path, default=None, help="train: a list file of images (default: "
                        "--images of the 960 training samples, spread over the classes)")
    parser.add_argument("--predictor", type=Path, default=None,
                        help="a predictor file; pilot also takes 'oracle' (start from the reference's masks)")
    parser.add_argument("--start", type=Path, default=None, help="train: a predictor to fine-tune")
    parser.add_argument("--reference", type=Path, default=None, help="pilot: paper-fast store of the pilot images")
    parser.add_argument("--variants", nargs="*", default=["cold-25", "warm", "warm-l1x2:l1_start=2",
                                                            "warm-lr0.05:optim.lr=0.05"],
                        help="pilot: NAME[:KEY=VALUE...] (warm starts cut at --cuts; cold-N: the preset for N)")
    parser.add_argument("--cuts", type=lambda s: [int(c) for c in s.split(",")], default=[0, 5, 10, 25, 50])
    parser.add_argument("--extents", type=lambda s: [float(c) for c in s.split(",")], default=[],
                        help="exponents of the extent search of the start (e.g. 1,2,4,8,16,32,64; default: none)")
    parser.add_argument("--lr", type=float, default=None, help="curve: refinement step size (default: the preset's)")
    parser.add_argument("--l1-start", type=float, default=1.0, help="curve: L1 warm-up of the refinement (1: off)")
    parser.add_argument("--paper-fast", type=Path, default=Path("/work/runs/methods/paper-fast/masks.h5"))
    parser.add_argument("--paper", type=Path, default=Path("/work/runs/methods/paper/masks.h5"))
    parser.add_argument("--train-seconds", type=float, default=None,
                        help="curve: the predictor's training time, for predictors that did not record it")
    parser.add_argument("--batch", type=int, default=8, help="images per solve (curve) or training step (train)")
    parser.add_argument("--train-lr", type=float, default=1e-3, help="train: Adam's step on the predictor")
    parser.add_argument("--out", default=None, help="CSV stem under results/benchmarks/ (default: amortise-MODE)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    defaults = {"arch": 64, "train": 480, "pilot": 16, "curve": 100}
    args.images = args.images or defaults[args.mode]
    args.out = args.out or f"amortise-{args.mode}"
    device = pick_device(args.device)
    classifier = load_model("efficientnet_lite0", device=device)
    info = machine(device)
    {"arch": mode_arch, "train": mode_train, "pilot": mode_pilot, "curve": mode_curve}[args.mode](args, classifier, info)


if __name__ == "__main__":
    main()
