"""The ``extremal`` preset against TorchRay's ``extremal_perturbation`` (its reference code).

Run from the repository root (needs the ``peers`` extra: ``pip install -e '.[peers]'``)::

    .venv/bin/python benchmarks/peers.py run torchray-even   # TorchRay as shipped (flip on even iterations)
    .venv/bin/python benchmarks/peers.py run torchray-odd    # TorchRay, flip on odd iterations (the yardstick)
    .venv/bin/python benchmarks/peers.py run ours            # the extremal preset, all images batched
    .venv/bin/python benchmarks/peers.py speed               # masks per second, both, same process
    .venv/bin/python benchmarks/peers.py judge               # quality and agreement -> results/peers/

Every ``run`` caches its masks per image under ``results/peers/cache/<method>/`` (``.npz``,
upsampled to the input, float16), so an interrupted run resumes and ``judge`` recomputes only the
judge. All methods see the same model (EfficientNet-Lite0), the first ``--images`` sorted images of
the development set, their top-1 classes, the areas 0.05 / 0.1 / 0.2 and ``--iterations`` (800).

TorchRay runs one image at a time through its own API: preservation variant, blur perturbation and
its defaults (step 7, sigma 21, 8 levels, flip jitter). Its input is the normalised image and its
model the network that takes it, which is what the preset optimises too. ``torchray-odd`` gives
TorchRay a model that flips its input first: TorchRay then sees flipped inputs on odd iterations
instead of even ones. TorchRay draws nothing at random, so this is the one jitter it can vary;
the agreement of the two runs is the yardstick for "as close as TorchRay is to itself".

The judge belongs to neither method: for each area, the mask's mean against the area asked; the
target's probability and logit on the image kept through the mask with the rest replaced by a
Gaussian blur (sigma 10, reflect borders, computed here); deletion and insertion AUCs of each
method's saliency (the sum of its area masks) with :mod:`pipeline.metrics.deletion`; Pearson
correlation and top-a IoU between the masks of two methods.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, load_average, load_images, machine, now, table, write_csv  # noqa: E402

from pipeline.config import override, preset  # noqa: E402
from pipeline.models import load_model  # noqa: E402

AREAS = (0.05, 0.1, 0.2)
OUT = REPO / "results" / "peers"
METHODS = ("torchray-even", "torchray-odd", "ours")


class _FlipFirst(torch.nn.Module):
    """The network with its input flipped horizontally first (TorchRay's jitter on odd iterations)."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.flip(3))


def torchray_masks(classifier, x: torch.Tensor, target: int, iterations: int, flip_odd: bool) -> torch.Tensor:
    """TorchRay's masks ``(K, 1, H, W)`` for one normalised image ``x`` ``(1, 3, H, W)``."""
    from torchray.attribution.extremal_perturbation import extremal_perturbation

    module = _FlipFirst(classifier.module) if flip_odd else classifier.module
    masks, _ = extremal_perturbation(module, x, target, areas=list(AREAS), max_iter=iterations)
    return masks.detach()


def ours_config(iterations: int, extra: list[str] | None = None):
    return override(preset("extremal"), [f"optim.iterations={iterations}", f"objective.areas={list(AREAS)}"]
                    + list(extra or []))


def ours_masks(classifier, images: torch.Tensor, targets: torch.Tensor, iterations: int,
               extra: list[str] | None = None) -> torch.Tensor:
    """The preset's masks, upsampled to the input, ``(B, K, H, W)``, the whole batch at once."""
    from pipeline import masks as masklib
    from pipeline.solver import solve

    config = ours_config(iterations, extra)
    result = solve(classifier, images, config, targets=targets)
    return masklib.upsample(result.masks, tuple(images.shape[-2:]), config.mask)


def _cache(method: str, iterations: int) -> Path:
    return OUT / "cache" / f"{method}-{iterations}"


def _setup(args) -> tuple:
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    classifier = load_model("efficientnet_lite0")
    images, _, source = load_images(args.images, classifier.input_size, require_real=True)
    if not len(images):
        sys.exit(f"error: the development set is missing ({source})")
    with torch.no_grad():
        targets = classifier(classifier.normalize(images)).argmax(1)
    return classifier, images, targets, source


def cmd_run(args) -> None:
    classifier, images, targets, source = _setup(args)
    folder = _cache(args.method, args.iterations)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"{args.method}: {len(images)} images of {source}, {args.iterations} iterations; {now()}; "
          f"load {load_average()}", flush=True)
    if args.method == "ours":
        todo = [i for i in range(len(images)) if not (folder / f"{i:03d}.npz").exists()]
        if not todo:
            return
        index = torch.tensor(todo)
        start = time.perf_counter()
        masks = ours_masks(classifier, images[index], targets[index], args.iterations, args.set)
        seconds = time.perf_counter() - start
        for row, i in enumerate(todo):
            _save(folder / f"{i:03d}.npz", masks[row], int(targets[i]), seconds / len(todo), args)
        print(f"  {len(todo)} images in {seconds:.0f} s (batched); load {load_average()}", flush=True)
        return
    for i in range(len(images)):
        path = folder / f"{i:03d}.npz"
        if path.exists():
            continue
        start = time.perf_counter()
        x = classifier.normalize(images[i : i + 1])
        masks = torchray_masks(classifier, x, int(targets[i]), args.iterations, args.method == "torchray-odd")
        seconds = time.perf_counter() - start
        _save(path, masks[:, 0], int(targets[i]), seconds, args)
        print(f"  image {i}: {seconds:.0f} s, load {load_average()}", flush=True)


def _save(path: Path, masks: torch.Tensor, target: int, seconds: float, args) -> None:
    np.savez_compressed(path, masks=masks.cpu().numpy().astype(np.float16), target=target, seconds=seconds,
                        iterations=args.iterations, threads=torch.get_num_threads())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="compute and cache one method's masks")
    run.add_argument("method", choices=METHODS)
    run.add_argument("--set", action="append", default=[], help="extra overrides for 'ours'")
    for p in (run,):
        p.add_argument("--images", type=int, default=16)
        p.add_argument("--iterations", type=int, default=800)
        p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.command == "run":
        cmd_run(args)


if __name__ == "__main__":
    main()
