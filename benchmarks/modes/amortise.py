"""Amortised masks (issue 26): a mask predictor trained on sample images, then per-image refinement.

Stages (``--stage``; each resumes where a killed run stopped, its files in ``--work``)::

    B="nice -n 10 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/run.py amortise --threads 1"
    $B --stage arch --work runs/amortise --images 64       # the predictor's architecture
    $B --stage train --work runs/amortise --images 192 --loss regression --solved STORE ...
    $B --stage pilot --work runs/amortise --predictor P --reference STORE   # how to refine a start
    $B --stage curve --work runs/amortise --predictor P --images 100        # quality curve, development set

Images. Training: ``imagenet-samples-1000`` (``--samples``; one per class, labels from the
folders), minus every 25th image (from the 13th), which are held out (``pilot``, ``arch``);
``train --images N`` takes N of the other 960, evenly spread over the classes (or ``--train-list``).
Evaluation: the first ``--images`` development images (``--data``, sorted), never trained on, each
explaining its **label** class with seed = its index, as ``perturb masks --target label`` does.

``arch``: the ``features`` head against the ``pixels`` encoder-decoder, trained by the same loss on
the same images and epochs; the mean noise-free objective ``J`` (``l1 * |1-m| + tv * TV(m) + p``,
the preset's final weights) of their masks on 24 held-out images, beside the paper's uniform
random start, and the paired per-image difference.

``train``: :func:`pipeline.amortise.train_predictor` (as ``perturb train-predictor``).

``pilot``: refinement variants (``--variants NAME[:KEY=VALUE...]``: iterations, step size, L1
warm-up ``l1_start``; ``cold-N``: the preset from its own start for N iterations) started from the
predictor (``--predictor``, or ``oracle``: the reference's own masks), on 16 held-out samples,
against ``paper-fast`` solved there (``--reference``): per image ``J``, ``p_final``, ``area``, paired
differences and their standard errors.

``curve``: one warm solve of ``max(--cuts)`` iterations per batch, the masks copied at every cut
(0 = the predictor alone, after its extent search), each cut written to a store of ``--work``, then
every store scored by :func:`pipeline.evaluation.evaluate_store` (deletion AUC on both substrates,
insertion AUC, localisation with the boxes) beside ``paper-fast`` (``--paper-fast``) and ``paper``
(``--paper``: paired on the images it has, when it has ``--min-paper`` of them), and Grad-CAM (a
baseline store made here). Per cut: the means, and the paired differences from ``paper-fast`` and
``paper`` with standard errors and the verdict of the ``iterations`` mode (no AUC worse by more
than 0.005; ``p_final`` and ``area`` no worse than two standard errors). The cost per image of a
50,000-image run, in solver image-iterations: the refinement, plus the predictor's pass and extent
search (timed here on 8 images against 10 solver iterations), plus the training spread over 50,000
images: the solves of the masks it regressed on and the training's own time in solver iterations.

Files: ``STEM.csv`` (default stem ``amortise-<stage>-<device>``; the curve also ``STEM-per-image.csv``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from benchmarks.common import REPO, clock, table
from benchmarks.modes.iterations import LOWER_IS_BETTER, METRICS, paired
from pipeline import load_model
from pipeline.amortise import (EXTENTS, PredictorConfig, TrainConfig, init_record, load_predictor, predict_masks,
                               train_predictor, warm_config)
from pipeline.config import override, preset, to_dict
from pipeline.data import ImageDataset, collate, discover
from pipeline.solve import masks as masklib
from pipeline.solve import solve
from pipeline.solve.problem import Problem, final_scores, initial_masks, p_perturbed

NAME = "amortise-{{stage}}-{device}"
"""``{stage}`` becomes the stage (the harness's writer formats ``{device}``; the doubled braces survive it)."""
DEVICES = ("cpu", "cuda")
THREADS = 1
"""One torch thread: on the shared 2-core machine two threads ran an iteration 4-10x slower."""

# The shared data beside the checkout, beside the folder holding worktrees, or inside it.
DATA = next((p for p in (REPO.parent / "shared" / "data", REPO.parents[1] / "shared" / "data",
                         REPO / "shared" / "data") if (p / "imagenet-val-100").is_dir()), REPO / "shared" / "data")
PRESET = "paper-fast"
RUN_IMAGES = 50_000
EVAL_STEP = 1792
"""``perturb evaluate``'s default deletion/insertion step at 224 px (what every evaluation here used)."""
LOC = ("loc_value_0.1_tight", "loc_energy_0.95_tight", "loc_mean_0.5_tight")


def _floats(text: str) -> list[float]:
    return [float(c) for c in text.split(",") if c]


def add_arguments(parser) -> None:
    parser.add_argument("--stage", required=True, choices=["arch", "train", "pilot", "curve"])
    parser.add_argument("--work", type=Path, required=True, help="folder for lists, predictors, stores, evaluations")
    parser.add_argument("--images", type=int, default=None,
                        help="arch/train: training images; pilot: held-out images; curve: development images "
                        "(defaults 64, 480, 16, 100)")
    parser.add_argument("--data", type=Path, default=DATA / "imagenet-val-100" / "val",
                        help="curve: the development images (boxes in ../bbox)")
    parser.add_argument("--samples", type=Path, default=DATA / "imagenet-samples-1000", help="training images")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--loss", default="objective", choices=["objective", "regression", "both"])
    parser.add_argument("--solved", type=Path, nargs="*", default=None, help="arch/train: stores of solved masks "
                        "of the training images (regression, both)")
    parser.add_argument("--train-list", type=Path, default=None, help="arch/train: a list file of images")
    parser.add_argument("--predictor", type=Path, default=None,
                        help="a predictor file; pilot also takes 'oracle' (start from the reference's masks)")
    parser.add_argument("--start", type=Path, default=None, help="train: a predictor to fine-tune")
    parser.add_argument("--reference", type=Path, default=None, help="pilot: paper-fast store of the pilot images")
    parser.add_argument("--variants", nargs="*", default=["cold-25", "warm", "warm-l1x2:l1_start=2",
                                                            "warm-lr0.05:optim.lr=0.05"],
                        help="pilot: NAME[:KEY=VALUE...] (warm starts cut at --cuts; cold-N: the preset for N)")
    parser.add_argument("--cuts", type=lambda s: [int(c) for c in s.split(",")], default=[0, 5, 10, 25, 50])
    parser.add_argument("--extents", type=_floats, default=list(EXTENTS),
                        help="exponents of the extent search of the start (default 1,2,4,...,256; '' for none)")
    parser.add_argument("--lr", type=float, default=None, help="curve: refinement step size (default: the preset's)")
    parser.add_argument("--l1-start", type=float, default=1.0, help="curve: L1 warm-up of the refinement (1: off)")
    parser.add_argument("--paper-fast", type=Path, default=Path("/work/runs/methods/paper-fast/masks.h5"),
                        help="curve: paper-fast store of the development images (--target label)")
    parser.add_argument("--paper", type=Path, default=Path("/work/runs/sweep100/paper/masks.h5"),
                        help="curve: paper (300 iterations) store of the development images (--target label)")
    parser.add_argument("--cached-only", action="store_true",
                        help="curve: score only what is evaluated already (cached chunks, or an evaluation beside "
                        "the store); each comparison is paired on the images both sides have")
    parser.add_argument("--min-paper", type=int, default=32, help="curve: fewest paper images to compare with")
    parser.add_argument("--train-seconds", type=float, default=None,
                        help="curve: the predictor's training time, for predictor files that do not record it")
    parser.add_argument("--train-iteration-seconds", type=float, default=None,
                        help="curve: seconds per solver image-iteration when the training was timed (the "
                        "machine's load then), to express its time in solver iterations (default: as timed here)")
    parser.add_argument("--batch", type=int, default=8, help="images per solve (curve) or training step (train)")
    parser.add_argument("--train-lr", type=float, default=1e-3, help="train: Adam's step on the predictor")
    parser.add_argument("--quiet", action="store_true")


def run(args, device: torch.device, results) -> int:
    defaults = {"arch": 64, "train": 480, "pilot": 16, "curve": 100}
    args.images = args.images or defaults[args.stage]
    results.name = results.name.format(stage=args.stage)
    classifier = load_model("efficientnet_lite0", device=device)
    {"arch": stage_arch, "train": stage_train, "pilot": stage_pilot, "curve": stage_curve}[args.stage](
        args, classifier, results)
    return 0


# ---------------------------------------------------------------- images

def sample_split(samples: Path, work: Path) -> dict[str, Path]:
    """List files of the sample images: ``train`` (960), and the held-out every 25th from the 13th:
    ``pilot`` (its first 16) and ``archeval`` (the other 24)."""
    files = sorted(str(p) for p in samples.rglob("*") if p.is_file())
    heldout = files[12::25]
    held = set(heldout)
    train = [f for f in files if f not in held]
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
        raise SystemExit(f"error: unreadable images in {listing}")
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
    """Paired means and the ``iterations`` mode's verdict of ``rows`` against ``reference`` (same images)."""
    out, verdict = {}, []
    for metric in metrics:
        diff, error = paired(rows, reference, metric)
        out[f"diff_{metric}"], out[f"se_{metric}"] = diff, error
        worse = diff if metric in LOWER_IS_BETTER else -diff
        verdict.append(worse <= (0.005 if "auc" in metric else 2 * error))
    out["same_quality"] = all(verdict)
    return out


# ---------------------------------------------------------------- stages

def stage_arch(args, classifier, results) -> None:
    lists = sample_split(args.samples, args.work)
    train = args.train_list or spread(lists["train"], args.images, args.work, "arch-train")
    solver = preset(PRESET)
    images, labels, _ = load(lists["archeval"], classifier.input_size)
    seeds = torch.arange(len(images))
    problem = Problem(classifier, images, labels, solver, seeds)
    start_j, start_p, start_a = noise_free_objective(problem, initial_masks(problem))  # the paper's start
    rows = [{"variant": "uniform start", "J": float(start_j.mean()), "p_final": float(start_p.mean()),
             "area": float(start_a.mean()), "J_se": float(start_j.std() / len(start_j) ** 0.5),
             "train_seconds": 0.0}]
    per_image = {}
    for arch in ("features", "pixels"):
        out = args.work / f"arch-{arch}-{args.loss}-{Path(train).stem}-{args.epochs}.pt"
        began = clock(classifier.device)
        config = TrainConfig(loss=args.loss, batch_size=args.batch, lr=args.train_lr,
                             predictor=PredictorConfig(arch=arch))
        summary = train_predictor(train, out, classifier, PRESET, args.epochs, progress=not args.quiet,
                                  config=config, solved=args.solved)
        seconds = clock(classifier.device) - began
        predictor = load_predictor(out, classifier)
        masks, _ = predict_masks(predictor, classifier, images, solver, labels, extents=args.extents)
        j, p, a = noise_free_objective(problem, masks)
        per_image[arch] = j
        rows.append({"variant": f"{arch} head", "J": float(j.mean()), "p_final": float(p.mean()),
                     "area": float(a.mean()), "J_se": float(j.std() / len(j) ** 0.5),
                     "train_seconds": predictor.meta.get("seconds", seconds),
                     "train_images": summary.images, "epochs": summary.epochs, "loss": args.loss,
                     "extents": len(args.extents), "parameters": sum(t.numel() for t in predictor.parameters()),
                     "predictor": summary.identity})
    diff = per_image["features"] - per_image["pixels"]  # paired, per held-out image
    rows.append({"variant": "features - pixels (paired)", "J": float(diff.mean()),
                 "J_se": float(diff.std() / len(diff) ** 0.5), "J_median": float(diff.median()),
                 "features_better": int((diff < 0).sum())})
    for row in rows:
        row["heldout"] = len(images)
    results.write(rows)
    print(table(rows, ["variant", "J", "J_se", "J_median", "features_better", "p_final", "area", "train_seconds"]))


def stage_train(args, classifier, results) -> None:
    lists = sample_split(args.samples, args.work)
    listing = args.train_list or spread(lists["train"], args.images, args.work, "train")
    solved = args.solved if args.loss != "objective" else None
    began = clock(classifier.device)
    config = TrainConfig(loss=args.loss, batch_size=args.batch, lr=args.train_lr, checkpoint_every=25)
    tag = f"-from-{load_predictor(args.start).identity}" if args.start else ""
    out = args.predictor or args.work / f"predictor-{args.loss}-{args.images}x{args.epochs}{tag}.pt"
    summary = train_predictor(listing, out, classifier, PRESET, args.epochs, config=config, solved=solved,
                              start=args.start, progress=not args.quiet)
    print("\n".join(summary.lines()), f"({clock(classifier.device) - began:.0f} s)")


def stage_pilot(args, classifier, results) -> None:
    from pipeline.store import MaskStore

    lists = sample_split(args.samples, args.work)
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
    for text in args.variants:
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
        row["predictor"] = identity
    results.write(rows)
    print(table(rows, ["variant", "mean_J", "diff_J", "se_J", "mean_area", "diff_area", "mean_p_final",
                       "diff_p_final", "same_quality"]))


def _pilot_rows(j, p, a) -> list[dict]:
    return [{"J": float(j[i]), "p_final": float(p[i]), "area": float(a[i])} for i in range(len(j))]


def stage_curve(args, classifier, results) -> None:
    from pipeline.jobs.baselines import run_baseline
    from pipeline.jobs.run import EXTRA_COLUMNS, RunConfig, batch_rows
    from pipeline.store import MaskWriter

    predictor = load_predictor(args.predictor, classifier)
    base = preset(PRESET)
    cuts = sorted(set(args.cuts))
    config = warm_config(base, iterations=max(cuts), l1_start=args.l1_start, lr=args.lr)
    records = discover(args.data, classifier.vocabulary, limit=args.images)
    run = RunConfig(target="label", batch_size=args.batch, workers=0, limit=args.images)
    tag = f"{predictor.identity}-{config.optim.lr:g}-{args.l1_start:g}-{len(args.extents)}"
    stores = {cut: args.work / f"curve-{tag}-{cut}.h5" for cut in cuts}
    writers = {}
    size = config.mask.size
    for cut, path in stores.items():
        store_config = {"solver": to_dict(config), "model": classifier.spec, "target": "label", "seed": 0,
                        "input_size": list(classifier.input_size), "cut": cut,
                        "init": init_record(predictor, args.extents)}
        writers[cut] = MaskWriter(path, store_config, classifier.spec, args.data.resolve(), (1, size, size),
                                  input_size=classifier.input_size)
    dataset = ImageDataset(records, classifier.input_size)
    try:
        done = {cut: writer.done_indices() for cut, writer in writers.items()}
        todo = [i for i in range(len(records)) if any(i not in d for d in done.values())]
        for start in range(0, len(todo), args.batch):
            batch = collate([dataset[i] for i in todo[start:start + args.batch]])
            rows, ok = batch_rows(batch, records, run, EXTRA_COLUMNS)
            chosen = ok.nonzero()[:, 0]
            images, targets, seeds = batch["image"][chosen], batch["label"][chosen], batch["index"][chosen]
            # Only the cuts some store lacks (a cut added later): the first t iterations of a solve
            # are a t-iteration solve (constant step, every random draw keyed by image and iteration).
            fresh = {cut: [k for k, i in enumerate(batch["index"].tolist()) if i not in done[cut]] for cut in cuts}
            wanted = [cut for cut in cuts if fresh[cut]]
            init, _ = predict_masks(predictor, classifier, images, config, targets, extents=args.extents)
            snaps = solve_with_cuts(classifier, images, config, wanted, seeds, targets, init)
            problem = Problem(classifier, images, targets, config, seeds)
            for cut in wanted:
                j, p_final, area = noise_free_objective(problem, snaps[cut])
                _, _, tv = final_scores(problem, snaps[cut])
                cut_rows = {k: (v.clone() if torch.is_tensor(v) else list(v)) for k, v in rows.items()}
                masks = torch.full((len(ok), 1, size, size), float("nan"))
                masks[chosen] = snaps[cut].cpu()
                for name, values in (("target", targets), ("p_original", problem.p_original), ("p_final", p_final),
                                     ("loss", j), ("area", area), ("tv", tv),
                                     ("p_perturbed", p_perturbed(problem))):
                    cut_rows[name][chosen] = values.to("cpu", cut_rows[name].dtype)
                keep = fresh[cut]
                cut_rows = {k: (v[keep] if torch.is_tensor(v) else [v[f] for f in keep]) for k, v in cut_rows.items()}
                writers[cut].append(cut_rows, masks[keep])
            print(f"curve: {start + len(chosen)}/{len(todo)} images", flush=True)
    finally:
        for writer in writers.values():
            writer.close()
    timing = time_costs(classifier, predictor, config, dataset, args)
    gradcam = args.work / "gradcam.h5"
    if not _complete(gradcam, len(records)):
        run_baseline("gradcam", args.data, gradcam, classifier, run)
    evaluated = {f"amortised@{cut}": _evaluate(stores[cut], classifier, args) for cut in cuts}
    evaluated["gradcam"] = _evaluate(gradcam, classifier, args)
    evaluated["paper-fast"] = _evaluate(args.paper_fast, classifier, args)
    notes = []
    paper_images = _stored(args.paper)
    if paper_images >= min(args.min_paper, args.images):
        evaluated["paper"] = _evaluate(args.paper, classifier, args, limit=min(paper_images, args.images))
    else:
        notes.append(f"paper: {args.paper} holds {paper_images} images (< {args.min_paper}); not compared")
    for name in ("paper-fast", "paper"):
        if name in evaluated and len(evaluated[name]) < min(args.min_paper, args.images):
            notes.append(f"{name}: {len(evaluated.pop(name))} images evaluated (< {args.min_paper}); not compared")
    _curve_report(args, results, predictor, evaluated, cuts, timing, notes)


def time_costs(classifier, predictor, config, dataset, args, count: int = 8, iterations: int = 5,
               repeats: int = 3) -> dict:
    """Seconds per image of the predictor's pass with its extent search, and of one solver iteration,
    on the first ``count`` development images: each timed ``repeats`` times, alternately, and the
    fastest kept (other jobs on a shared machine only ever slow a timing down)."""
    batch = collate([dataset[i] for i in range(min(count, len(dataset)))])
    images, targets = batch["image"], batch["label"]
    predict, iterate = [], []
    for _ in range(repeats):
        began = clock(classifier.device)
        init, _ = predict_masks(predictor, classifier, images, config, targets, extents=args.extents)
        predict.append(clock(classifier.device) - began)
        began = clock(classifier.device)
        solve(classifier, images, override(config, [f"optim.iterations={iterations}"]), targets=targets, init=init)
        iterate.append(clock(classifier.device) - began)
    return {"predict_seconds_per_image": min(predict) / len(images),
            "iteration_seconds_per_image": min(iterate) / (len(images) * iterations)}


def _stored(path: Path) -> int:
    from pipeline.store import MaskStore

    if not Path(path).exists():
        return 0
    with MaskStore(path) as store:
        return len(store)


def _complete(path: Path, count: int) -> bool:
    return _stored(path) >= count


def _evaluate(path, classifier, args, chunk: int = 20, limit: int | None = None) -> dict[int, dict]:
    """Per-image metrics of a store's first ``limit`` (default ``--images``) images, by image index,
    evaluated ``chunk`` images at a time, each chunk cached in ``--work`` (a killed run keeps the
    chunks it finished)."""
    import pandas as pd

    from pipeline.evaluation import EvalConfig, evaluate_store
    from pipeline.store import MaskStore

    limit = limit or args.images
    with MaskStore(path) as store:
        key = f"{store.run_key}-{len(store)}"
        run_key, config, count = store.run_key, store.config, len(store)
    stem = Path(path).stem

    def cached(suffix: str) -> Path:
        """The cache folder of a chunk: one made before for this store (the same file and recorded
        configuration, whatever run key the code of the day computed), else a new one."""
        for folder in sorted((args.work / "eval").glob(f"{stem}-*-{count}-{suffix}")):
            try:
                settings = json.loads((folder / "summary.json").read_text())["settings"]
            except (OSError, ValueError, KeyError):
                continue
            if Path(settings["store"]).resolve() == Path(path).resolve() and settings["store_config"] == config:
                return folder
        return args.work / "eval" / f"{stem}-{key}-{suffix}"

    whole = cached(str(limit))  # evaluated in one go
    beside = Path(path).parent  # perturb evaluate's or perturb sweep's folder around the store
    if _evaluation_of(beside, run_key):
        whole = beside
    if (whole / "per_image.csv").exists():
        frame = pd.read_csv(whole / "per_image.csv")
        frame = frame[(frame["eval_status"] == "ok") & (frame["index"] < limit)]
        return {int(r["index"]): r for r in frame.to_dict("records")}
    rows = {}
    for start in range(0, limit, chunk):
        out = cached(f"{start}-{min(start + chunk, limit)}")
        if not (out / "per_image.csv").exists():
            if args.cached_only:
                continue
            evaluate_store(path, None, classifier, out, boxes=args.data.parent / "bbox",
                           indices=range(start, min(start + chunk, limit)),
                           config=EvalConfig(workers=0, plots=False), progress=not args.quiet)
        frame = pd.read_csv(out / "per_image.csv")
        frame = frame[frame["eval_status"] == "ok"]
        rows.update({int(r["index"]): r for r in frame.to_dict("records")})
    return rows


def _evaluation_of(folder: Path, run_key: str) -> bool:
    """Whether ``folder`` holds a finished evaluation (``per_image.csv``, ``summary.json``) of the
    store whose run key is ``run_key``, made with the evaluation settings used here (the default)."""
    summary, per_image = folder / "summary.json", folder / "per_image.csv"
    if not (summary.exists() and per_image.exists()):
        return False
    settings = json.loads(summary.read_text()).get("settings", {})
    return (settings.get("store_attributes", {}).get("run_key") == run_key
            and settings.get("step") == EVAL_STEP and settings.get("boxes") is not None)


def training_iterations(meta: dict, per_iteration: float, seconds: float | None = None) -> dict:
    """The predictor's training cost in solver image-iterations: ``solved``, the solves of the masks it
    regressed on (images x the iterations each store ran); ``training``, the training itself: its
    image-steps when it scored the objective (each about one solver iteration), its recorded wall
    time in solver iterations (``per_iteration`` seconds each) when it only regressed on cached
    features."""
    from pipeline.store import MaskStore

    solved = 0.0
    for entry in meta.get("solved") or []:
        with MaskStore(entry["store"]) as store:
            solved += entry["images"] * store.config["solver"]["optim"]["iterations"]
    if meta["training"]["loss"] != "regression":
        training = float(meta["image_steps"])
    else:
        seconds = meta.get("seconds", seconds if seconds is not None else math.nan)
        training = seconds / per_iteration if per_iteration else math.nan
    return {"solved": solved, "training": training}


def _curve_report(args, results, predictor, evaluated, cuts, timing, notes) -> None:
    meta = predictor.meta
    per_image, summary = [], []
    per_iteration = timing["iteration_seconds_per_image"]
    predictor_cost = timing["predict_seconds_per_image"] / per_iteration
    train = training_iterations(meta, args.train_iteration_seconds or per_iteration, args.train_seconds)
    training_cost = (train["solved"] + train["training"]) / RUN_IMAGES
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
        if cut == 0 and "gradcam" in evaluated:  # the one-pass predictor against the one-pass Grad-CAM
            common = sorted(set(rows) & set(evaluated["gradcam"]))
            for metric in (*[m for m in METRICS if "auc" in m], "loc_energy_0.95_tight"):
                diff, error = paired([rows[i] for i in common], [evaluated["gradcam"][i] for i in common], metric)
                out[f"diff_{metric}_vs_gradcam"], out[f"se_{metric}_vs_gradcam"] = diff, error
        summary.append(out)
    for row in summary:
        row.update(predictor=predictor.identity, train_images=meta["images"]["count"], epochs=meta["epochs"],
                   train_loss=meta["training"]["loss"], train_seconds=meta.get("seconds", args.train_seconds),
                   train_solved_iterations=train["solved"], train_own_iterations=train["training"],
                   training_iterations_per_image=training_cost, predictor_cost_iterations=predictor_cost,
                   seconds_per_iteration=per_iteration, train_iteration_seconds=args.train_iteration_seconds,
                   refine_lr=args.lr, refine_l1_start=args.l1_start,
                   extents=len(args.extents), notes="; ".join(notes))
    path = results.write(summary)
    results.write(per_image, "per-image")
    columns = ["variant", "images", "iterations_per_image", "mean_deletion_auc_blur", "mean_deletion_auc_zero",
               "mean_insertion_auc", "mean_p_final", "mean_area", "mean_loc_energy_0.95_tight",
               "same_quality_vs_paper-fast", "same_quality_vs_paper"]
    print(f"{results.info['machine']}; predictor {predictor.identity} ({meta['images']['count']} images x "
          f"{meta['epochs']} epochs); predictor pass = {predictor_cost:.2f} solver iterations; training = "
          f"{train['solved']:.0f} + {train['training']:.0f} image-iterations ({training_cost:.3f} per image of "
          f"{RUN_IMAGES})")
    for note in notes:
        print("note:", note)
    print(table(summary, columns))
    print(table(summary, ["variant", *[f"diff_{m}_vs_paper-fast" for m in METRICS]]))
    print(f"wrote {path}")
