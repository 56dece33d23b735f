"""Explain a folder of images with the public API: solve the masks, read them back, evaluate them.

    python examples/explain_folder.py [FOLDER] [--out DIR] [--iterations N] [--limit N] [--device cpu]

Without FOLDER, three images that ship with scikit-image are written to ``DIR/images`` (an
ImageNet-style folder: ``<wnid>/<name>.png``) and explained. Everything here is a name exported
by ``pipeline``; the ``perturb masks`` and ``perturb evaluate`` commands do the same.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

import pipeline as pp

SAMPLES = {"chelsea": "n02124075", "coffee": "n07920052", "rocket": "n04266014"}  # image -> its class's wnid


def sample_folder(root: Path) -> Path:
    """Write the scikit-image samples as ``root/<wnid>/<name>.png``; returns ``root``."""
    for name, wnid in SAMPLES.items():
        path = root / wnid / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(getattr(skimage.data, name)())).save(path)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, help="images to explain (default: scikit-image samples)")
    parser.add_argument("--out", type=Path, default=Path("results/example"))
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    folder = args.folder or sample_folder(args.out / "images")

    # The model, and the paper's preset with fewer iterations.
    classifier = pp.load_model("efficientnet_lite0", device=args.device)
    config = pp.override(pp.preset("paper"), [f"optim.iterations={args.iterations}"])

    # Solve every image's mask in batches into a resumable HDF5 store.
    store_path = args.out / "masks.h5"
    run = pp.RunConfig(batch_size=4, workers=0, limit=args.limit, progress=False)
    summary = pp.run_masks(folder, store_path, classifier, config, run)
    print("\n".join(summary.lines()))

    # Read the store back: one row per image, masks (N, K, h, w) with 1 = keep.
    with pp.MaskStore(store_path) as store:
        table = store.table()
        masks = store.masks()
    print(table[["path", "target", "p_original", "p_final", "area"]].to_string(index=False))
    print(f"masks {tuple(masks.shape)}")

    # Deletion/insertion metrics into a report folder.
    result = pp.evaluate_store(store_path, None, classifier, args.out / "evaluation",
                               config=pp.EvalConfig(workers=0, plots=False))
    for name in ("deletion_auc_blur", "insertion_auc"):
        print(f"{name} {result.summary['metrics'][name]['mean']:.4f}")


if __name__ == "__main__":
    main()
