"""Images per second of each saliency method, batched against a per-image loop of the same method.

Run from the repository root::

    .venv/bin/python benchmarks/methods_speed.py --images 4
    .venv/bin/python benchmarks/methods_speed.py --images 8 --method rise --method captum:IntegratedGradients

Every method (``NAME`` or ``NAME:KEY=VALUE,...``; the defaults below use small settings so a CPU run
takes minutes) runs on the same ``--images`` development images (EfficientNet-Lite0, 224 px, the
model's top-1 class as target): once on the whole batch (one call of the registered method's
function), and once one image at a time (the same function called per image: Captum, pytorch-grad-cam
and TorchRay's excitation backprop on a single image). RISE is also compared with TorchRay's
``torchray.attribution.rise.rise`` called one image at a time with the same number of masks, at its
default ``batch_size`` (32 masks per forward pass) and at ours. One warm-up call on one image
precedes each method's timings. Writes ``/tmp/methods-speed-<device>.csv`` (``--out`` changes it) and
prints the table; ``speedup`` is the per-image loop's seconds over the batched call's.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (DEFAULT_DATA, clock, load_average, load_images, machine, now, pick_device, table,  # noqa: E402
                     write_csv)

import torch  # noqa: E402

from pipeline.methods import cam, captum_methods, excitation, registry, rise  # noqa: E402
from pipeline.models import load_model  # noqa: E402

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


def parse(spec: str) -> tuple[str, dict[str, str]]:
    """``NAME[:KEY=VALUE,...]`` (a family name keeps its ``prefix:Member``) -> name, options."""
    parts = spec.split(":")
    cut = 2 if parts[0] in ("captum", "cam") else 1
    name, rest = ":".join(parts[:cut]), ":".join(parts[cut:])
    options = dict(item.split("=", 1) for item in rest.split(",") if item)
    return name, options


COLUMNS = ["method", "options", "batched_img_s", "per_image_img_s", "speedup", "max_rel_diff", "reference"]


def timed(device: torch.device, fn, *args) -> tuple[float, torch.Tensor]:
    start = clock(device)
    out = fn(*args)
    return clock(device) - start, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--method", action="append", help="NAME[:KEY=VALUE,...], repeatable (default: a set)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ImageNet-style folder (development images)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    for module in (captum_methods, cam, excitation, rise):
        module.register_all()

    device = pick_device(args.device)
    info = machine(device)
    print(f"machine: {info['machine']}; torch {info['torch']}; load average {load_average()}")
    classifier = load_model("efficientnet_lite0", device=device)
    images, _, source = load_images(args.images, root=args.data)
    images = images.to(device)
    with torch.no_grad():
        targets = classifier(classifier.normalize(images)).argmax(1)
    seeds = torch.arange(len(images), device=device)
    print(f"{len(images)} images from {source}")

    rows = []
    for spec in args.method or DEFAULT_METHODS:
        name, options = parse(spec)
        method = registry.get_method(name)
        resolved = method.fn.check(classifier, options)
        fn = method.fn

        def batched(x, t, s, fn=fn, options=options):
            return fn(classifier, x, t, s, **options)

        def per_image(x, t, s, batched=batched):
            return torch.cat([batched(x[i:i + 1], t[i:i + 1], s[i:i + 1]) for i in range(len(x))])

        batched(images[:1], targets[:1], seeds[:1])  # warm-up
        loop_s, looped = timed(device, per_image, images, targets, seeds)
        batch_s, together = timed(device, batched, images, targets, seeds)
        agree = float((looped - together).abs().max() / together.abs().max().clamp_min(1e-12))
        count = len(images)
        row = {"method": name, "options": ",".join(f"{k}={v}" for k, v in options.items()),
               "batched_img_s": round(count / batch_s, 3), "per_image_img_s": round(count / loop_s, 3),
               "speedup": round(loop_s / batch_s, 2), "max_rel_diff": f"{agree:.1e}", "reference": "same method"}
        rows.append(row)
        print(table([row], COLUMNS), flush=True)
        if name == "rise":
            rows.extend(torchray_rise(device, classifier, images, targets, resolved, batch_s))
            print(table(rows[-2:], COLUMNS), flush=True)

    print(table(rows, COLUMNS))
    out = args.out or Path(f"/tmp/methods-speed-{device.type}.csv")
    write_csv(out, [{**row, "images": len(images), "machine": info["machine"], "load": load_average(),
                     "date": now()} for row in rows])
    print(f"wrote {out}")
    return 0


def torchray_rise(device, classifier, images, targets, resolved, batch_s) -> list[dict]:
    """TorchRay's RISE one image at a time with our number of masks: at its default chunk and ours."""
    from torchray.attribution.rise import rise as torchray

    rows = []
    network = torch.nn.Sequential(classifier.module, torch.nn.Softmax(dim=1))
    x = classifier.normalize(images)
    for chunk in (32, resolved["batch_size"]):
        def loop(chunk=chunk):
            return torch.cat([torchray(network, x[i:i + 1], seed=resolved["seed"], num_masks=resolved["num_masks"],
                                       num_cells=resolved["num_cells"], batch_size=chunk, p=resolved["p"])
                              for i in range(len(x))])
        torchray(network, x[:1], num_masks=chunk, batch_size=chunk)  # warm-up
        seconds, _ = timed(device, loop)
        rows.append({"method": "rise", "options": f"torchray per image, batch_size={chunk}",
                     "batched_img_s": round(len(x) / batch_s, 3), "per_image_img_s": round(len(x) / seconds, 3),
                     "speedup": round(seconds / batch_s, 2), "max_rel_diff": "-", "reference": "torchray"})
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
