"""Evaluate your own saliency method: Captum's Saliency maps -> .npy files -> a store -> the metrics,
beside the built-in gradient baseline (the same definition) and meaningful perturbation (paper-fast).

    python examples/captum_round_trip.py [FOLDER] [--out DIR] [--iterations N] [--limit N] [--step PIXELS]

Without FOLDER, three images that ship with scikit-image are written to ``DIR/images`` (an
ImageNet-style folder) and used. Captum's ``Saliency`` of the softmax, ``|d p / d x|`` per colour
channel, is what the ``gradient`` baseline computes, so the imported store must score exactly as the
baseline's: the script prints the largest per-image difference of their deletion and insertion
AUCs (0 when the round trip is exact), then the comparison of the three methods.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import skimage.data
import torch
from captum.attr import Saliency
from PIL import Image

import pipeline as pp

SAMPLES = {"chelsea": "n02124075", "coffee": "n07920052", "rocket": "n04266014"}  # image -> its class's wnid
AUCS = ["deletion_auc_zero", "deletion_auc_blur", "insertion_auc"]


def sample_folder(root: Path) -> Path:
    """Write the scikit-image samples as ``root/<wnid>/<name>.png``; returns ``root``."""
    for name, wnid in SAMPLES.items():
        path = root / wnid / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(getattr(skimage.data, name)())).save(path)
    return root


def save_captum_maps(folder: Path, maps: Path, classifier: pp.Classifier, run: pp.RunConfig) -> int:
    """Captum's Saliency of every image, saved as ``maps/<relative path>.npy`` ``(3, H, W)``.

    The images are read and batched as ``perturb baseline`` reads and batches them (a CPU rounds
    a little differently for another batch size), and each map explains the model's top-1 class.
    """
    records = pp.discover(folder, classifier.vocabulary, limit=run.limit)
    saliency = Saliency(lambda x: classifier.module(x).float().softmax(1))
    for start in range(0, len(records), run.batch_size):
        batch = records[start:start + run.batch_size]
        images = torch.stack([pp.read_input(r.path, classifier.input_size)[0] for r in batch])
        x = classifier.normalize(images)
        with torch.no_grad():
            targets = classifier(x).argmax(1)
        grads = saliency.attribute(x.requires_grad_(True), target=targets, abs=True)
        for record, grad in zip(batch, grads):
            path = maps / Path(record.relpath).with_suffix(".npy")
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, grad.detach().numpy())
    return len(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, help="images (default: scikit-image samples)")
    parser.add_argument("--out", type=Path, default=Path("results/captum-round-trip"))
    parser.add_argument("--iterations", type=int, default=75, help="paper-fast's iterations (75)")
    parser.add_argument("--limit", type=int, default=None, help="the first N images only")
    parser.add_argument("--step", type=int, default=pp.EvalConfig().step, help="pixels per deletion step")
    args = parser.parse_args()
    folder = args.folder or sample_folder(args.out / "images")
    classifier = pp.load_model("efficientnet_lite0")
    run = pp.RunConfig(batch_size=4, workers=0, limit=args.limit, progress=False)

    # Your method: any tool that writes one map per image, named like the image.
    count = save_captum_maps(folder, args.out / "maps", classifier, run)
    print(f"{count} Captum Saliency maps in {args.out / 'maps'}")

    # Import them, and make the two stores they are compared with.
    stores = {"captum-saliency": args.out / "captum-saliency.h5", "gradient": args.out / "gradient.h5",
              "paper-fast": args.out / "paper-fast.h5"}
    summary = pp.import_maps(args.out / "maps", folder, stores["captum-saliency"], classifier,
                             method="captum-saliency", run=run)
    print("\n".join(summary.lines()))
    print("\n".join(pp.run_baseline("gradient", folder, stores["gradient"], classifier, run).lines()))
    config = pp.override(pp.preset("paper-fast"), [f"optim.iterations={args.iterations}"])
    print("\n".join(pp.run_masks(folder, stores["paper-fast"], classifier, config, run).lines()))

    # Evaluate each store, then compare them (paper-fast is the reference of the differences).
    evaluation = pp.EvalConfig(step=args.step, workers=0, plots=False)
    tables = {name: pp.evaluate_store(store, None, classifier, args.out / "eval" / name,
                                      config=evaluation).table.set_index("path").sort_index()
              for name, store in stores.items()}
    difference = np.abs(tables["captum-saliency"][AUCS].to_numpy() - tables["gradient"][AUCS].to_numpy()).max()
    print(f"per-image deletion/insertion AUCs, captum-saliency against the gradient baseline: "
          f"max |difference| {difference:g}")
    runs = [args.out / "eval" / name for name in ("paper-fast", "captum-saliency", "gradient")]
    comparison = pp.compare_runs(runs, args.out / "comparison", n_boot=200)
    shown = comparison[comparison["metric"].isin(AUCS)][["metric", "run", "n", "mean", "diff"]]
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
