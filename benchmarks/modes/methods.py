"""Images per second of each saliency method, batched against a per-image loop of the same method.

Every method (``--method NAME`` or ``NAME:KEY=VALUE,...``; the defaults below use small settings so
that a CPU run takes minutes) runs on the same ``--images`` development images (EfficientNet-Lite0,
224 px, the model's top-1 class as target) twice, each after one warm-up call on one image:

* ``batched``: one call of the registered method's function (``pipeline.methods``) on all images;
* ``per-image``: the same function called one image at a time, as a user of the library calls it
  (Captum, pytorch-grad-cam and TorchRay's excitation backprop on a single image).

With ``--repeats N`` each side is timed N times and the fastest time is kept.

RISE is also compared with TorchRay's ``torchray.attribution.rise.rise`` called one image at a time
with the same masks (same number, cells, p and seed), at TorchRay's default ``batch_size`` (32 masks
per forward pass) and at ours (the same forward batch as the batched call): ``reference``
``torchray``. ``ratio`` is the per-image loop's seconds over the batched call's (above 1: batching
is faster); ``max_rel_diff`` compares the two maps of the same method (largest difference over the
largest value), ``-`` for TorchRay (whose map is ours times ``p``, ``tests/methods/test_rise.py``).

Files: ``STEM.csv`` (default ``methods-<device>.csv``), one row per method and reference.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import torch

from benchmarks.common import add_images, clock, load_average, load_classifier, load_images, table

NAME = "methods-{device}"
DEVICES = ("cpu", "cuda")
THREADS = 0

DEFAULT_METHODS = [
    "captum:Saliency",
    "captum:IntegratedGradients:n_steps=8,internal_batch_size=32",
    "captum:InputXGradient",
    "captum:GuidedBackprop",
    "captum:DeepLift",
    "captum:NoiseTunnel:nt_samples=4,nt_samples_batch_size=4",
    "captum:Occlusion:sliding_window_shapes=56,strides=56",
    "captum:FeatureAblation:n_segments=16",
    "captum:LayerGradCam",
    "captum:GuidedGradCam",
    "cam:GradCAMPlusPlus",
    "cam:EigenCAM",
    "excitation_backprop",
    "contrastive_excitation_backprop",
    "rise:num_masks=128",
]
"""Small settings: every method on 4 images in a few minutes on 2 CPU cores."""

COLUMNS = ["method", "options", "reference", "images", "batched_img_s", "per_image_img_s", "ratio", "max_rel_diff"]


def add_arguments(parser) -> None:
    parser.add_argument("--model", default="efficientnet_lite0",
                        help="model spec; random weights are used when its weights are unavailable")
    add_images(parser, 4)
    parser.add_argument("--method", action="append", metavar="NAME[:KEY=VALUE,...]",
                        help="a method and its options, repeatable (default: 15 methods with small settings)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="time each side this many times and keep the fastest (a shared machine's noise "
                             "only ever adds time; default 1)")


def parse(spec: str) -> tuple[str, dict[str, str]]:
    """``NAME[:KEY=VALUE,...]`` (a family name keeps its ``prefix:Member``) -> name, options."""
    parts = spec.split(":")
    cut = 2 if parts[0] in ("captum", "cam") else 1
    name, rest = ":".join(parts[:cut]), ":".join(parts[cut:])
    options = dict(item.split("=", 1) for item in rest.split(",") if item)
    return name, options


def timed(device: torch.device, fn: Callable[[], Any], repeats: int = 1) -> tuple[float, Any]:
    """The fastest of ``repeats`` calls of ``fn`` (seconds) and the last call's result."""
    best = float("inf")
    for _ in range(max(1, repeats)):
        start = clock(device)
        out = fn()
        best = min(best, clock(device) - start)
    return best, out


def run(args, device: torch.device, results) -> int:
    from pipeline.jobs.baselines import checked_method

    warnings.filterwarnings("ignore")  # the libraries' deprecation notes, once per call
    classifier, weights = load_classifier(args.model, device)
    images, _, source = load_images(args.images, root=args.data)
    images = images.to(device)
    with torch.no_grad():
        targets = classifier(classifier.normalize(images)).argmax(1)
    seeds = torch.arange(len(images), device=device)
    print(f"{len(images)} images from {source}; weights {weights}", flush=True)
    rows: list[dict[str, Any]] = []
    for spec in args.method or DEFAULT_METHODS:
        name, options = parse(spec)
        method, resolved = checked_method(name, classifier, options)

        def batched(x, t, s, fn=method.fn, resolved=resolved):
            return fn(classifier, x, t, s, **resolved)

        batched(images[:1], targets[:1], seeds[:1])  # warm-up
        loop_s, looped = timed(device, lambda: torch.cat([batched(images[i:i + 1], targets[i:i + 1], seeds[i:i + 1])
                                                          for i in range(len(images))]), args.repeats)
        batch_s, together = timed(device, lambda: batched(images, targets, seeds), args.repeats)
        agree = float((looped - together).abs().max() / together.abs().max().clamp_min(1e-12))
        given = ",".join(f"{k}={v}" for k, v in options.items())
        first = len(rows)
        rows.append(_row(name, given, "same method", len(images), batch_s, loop_s, f"{agree:.1e}"))
        if name == "rise":
            rows += torchray_rise(device, classifier, images, resolved, batch_s, given, args.repeats)
        print(table(rows[first:], COLUMNS), flush=True)
        out = results.write(rows)  # a run cut short keeps what it measured
    print()
    print(table(rows, COLUMNS))
    for row in rows:
        if row["reference"].startswith("torchray"):
            print(f"RISE ({row['options']}) batched against TorchRay per image ({row['reference']}): "
                  f"x{row['ratio']:.2f}")
    print(f"wrote {out}")
    return 0


def _row(name: str, options: str, reference: str, count: int, batch_s: float, loop_s: float,
         agree: str) -> dict[str, Any]:
    return {"method": name, "options": options, "reference": reference, "images": count,
            "batched_img_s": count / batch_s, "per_image_img_s": count / loop_s, "ratio": loop_s / batch_s,
            "max_rel_diff": agree, "batched_s": batch_s, "per_image_s": loop_s, "loadavg_row": load_average()}


def torchray_rise(device: torch.device, classifier, images: torch.Tensor,
                  resolved: dict[str, Any], batch_s: float, given: str, repeats: int) -> list[dict[str, Any]]:
    """TorchRay's RISE one image at a time with our masks, at its default chunk (32) and at ours. It
    scores every class of each masked image (its ``target`` argument does not narrow the work)."""
    from torchray.attribution.rise import rise as torchray

    # TorchRay scores with a sigmoid of the output; the log-odds of the softmax make that the
    # softmax probability RISE weights its masks with (as tests/methods/test_rise.py compares them).
    class LogOdds(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, x):
            return torch.logit(self.module(x).double().softmax(1)).float()

    network = LogOdds(classifier.module)
    x = classifier.normalize(images)
    rows = []
    ours = min(max(1, resolved["batch_size"] // len(images)), resolved["num_masks"])  # masks per pass, batched call
    for chunk in sorted({32, resolved["batch_size"]}):
        def loop(chunk=chunk):
            with torch.no_grad():
                return torch.cat([torchray(network, x[i:i + 1], seed=resolved["seed"],
                                           num_masks=resolved["num_masks"], num_cells=resolved["num_cells"],
                                           batch_size=chunk, p=resolved["p"]) for i in range(len(x))])
        with torch.no_grad():
            torchray(network, x[:1], num_masks=chunk, batch_size=chunk)  # warm-up
        seconds, _ = timed(device, loop, repeats)
        note = "TorchRay's default" if chunk == 32 else "our batch_size"
        their = min(chunk, resolved["num_masks"])  # TorchRay's masked images per forward pass
        rows.append(_row("rise", given, f"torchray per image, batch_size={chunk} ({note}; forward batch {their}, "
                         f"ours {ours} masks x {len(images)} images)", len(images), batch_s, seconds, "-"))
    return rows
