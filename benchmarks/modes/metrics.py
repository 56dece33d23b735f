"""Deletion/insertion throughput: batched ``causal_curves`` against RISE's one-image loop.

Both sides compute the same protocol (RISE, ``eclique/RISE`` ``evaluation.py``): pixels ranked by
:func:`pipeline.metrics.deletion.pixel_order` (same tie-break), ``step`` pixels moved per step,
``ceil(H W / step) + 1`` softmax scores of the target class per curve; deletion from the image to
the zero substrate (mean grey), insertion from the blurred image (klen 11, sigma 5) to the image.

* ``per-image-loop``: RISE's way. One image at a time; each step edits the current input in place
  (``start[0, :, coords] = finish[0, :, coords]``) and runs a separate forward of batch 1, and the
  score is read back to the host every step.
* ``batched``: :func:`pipeline.metrics.deletion.causal_curves` over all images at once, ``--chunk``
  inputs per forward, the model called on contiguous NCHW input exactly as
  ``pipeline.evaluation.causal_batch`` does.
* ``batched-channels_last``: the same with the input converted to channels_last inside the
  forward (what the solver does), to see whether the metric path would gain from it; at the first
  ``--steps`` value only.

A curve at step 224 costs 225 forwards (29 at step 1792), so smaller steps use half the
``--images`` and a quarter of the ``--loop-images`` (at least 1).

``images_per_s`` counts finished curves of one kind (deletion or insertion) per second. The curves
of the images both sides computed are compared (``max_abs_diff_vs_loop``, ``allclose`` with
atol 1e-4, rtol 1e-3: batch size changes the convolution algorithms, so bit-equality is not
expected). The saliency is a random smooth map (28x28 uniform noise upsampled bilinearly): the
cost of a curve does not depend on the map.

It exits with status 1 when any comparison fails. Files: ``STEM.csv`` (default ``metrics-<device>.csv``).
"""

from __future__ import annotations

import math

import torch

from benchmarks.common import add_images, clock, load_average, load_classifier, load_images, table
from pipeline.metrics import auc, blur_substrate, causal_curves, pixel_order, zero_substrate
from pipeline.solve import masks as masklib

NAME = "metrics-{device}"
DEVICES = ("cpu", "cuda")
THREADS = 0


def add_arguments(parser) -> None:
    parser.add_argument("--model", default="efficientnet_lite0",
                        help="model spec; random weights are used when its weights are unavailable")
    add_images(parser, 8, "images in the batched runs at step >= 1792 (half as many, at least 1, at smaller steps)")
    parser.add_argument("--loop-images", type=int, default=4, help="images in the per-image loop at step >= 1792 "
                        "(a quarter as many, at least 1, at smaller steps); its curves are compared with the batched ones")
    parser.add_argument("--steps", nargs="+", type=int, default=[1792, 224], help="pixels per step (default 1792 224)")
    parser.add_argument("--chunk", type=int, nargs="+", default=[32], help="inputs per forward in causal_curves "
                        "(perturb evaluate's default: 32); several values time each")


def rise_loop(forward, image: torch.Tensor, saliency: torch.Tensor, target: int, substrate: torch.Tensor,
              mode: str, step: int) -> torch.Tensor:
    """One image's curve the way RISE's ``CausalMetric.single_run`` computes it. ``image``,
    ``substrate``: ``(1, 3, H, W)`` normalised; returns ``(n + 1,)`` float32 on the CPU."""
    _, channels, height, width = image.shape
    order = pixel_order(saliency)[0]
    n_steps = math.ceil(height * width / step)
    if mode == "deletion":
        start, finish = image.clone(), substrate
    else:
        start, finish = substrate.clone(), image
    flat_start, flat_finish = start.view(1, channels, -1), finish.reshape(1, channels, -1)
    scores = torch.empty(n_steps + 1)
    with torch.no_grad():
        for i in range(n_steps + 1):
            probs = torch.softmax(forward(start).float(), dim=1)
            scores[i] = float(probs[0, target])  # RISE stores each score on the host
            if i < n_steps:
                coords = order[step * i : step * (i + 1)]
                flat_start[0, :, coords] = flat_finish[0, :, coords]
    return scores


def run(args, device: torch.device, results) -> int:
    classifier, weights = load_classifier(args.model, device)
    images01, _, source = load_images(max(args.images, args.loop_images), root=args.data)
    print(f"images: {source}")
    x = classifier.normalize(images01.to(device))
    generator = torch.Generator().manual_seed(0)
    saliency = masklib.saliency(torch.rand(len(x), 1, 28, 28, generator=generator), "preserve",
                                classifier.input_size).to(device)
    with torch.no_grad():
        targets = classifier(x).argmax(1)
    forwards = {
        "batched": classifier,
        "batched-channels_last": lambda t: classifier(t.contiguous(memory_format=torch.channels_last)),
    }
    # Warm up every path once (first-call allocations, oneDNN/cuDNN set-up).
    with torch.no_grad():
        for forward in forwards.values():
            forward(x[: min(max(args.chunk), len(x))])
        classifier(x[:1])
    # cuDNN runs fp32 convolutions in TF32 by default (torch.backends.cudnn.allow_tf32), whose
    # results move by ~1e-3 relative between batch sizes (other algorithms); on a CPU they agree
    # to float32 rounding.
    tf32 = device.type == "cuda" and torch.backends.cudnn.allow_tf32
    atol = 1e-2 if tf32 else 1e-4
    base = {"model": args.model, "weights": weights, "device": device.type}
    rows: list[dict] = []
    for step in args.steps:
        variants = forwards if step == args.steps[0] else {"batched": forwards["batched"]}
        for mode in ("deletion", "insertion"):
            rows += time_step(classifier, variants, x, saliency, targets, mode, step, args, atol, base)
            out = results.write(rows)  # partial results survive an interrupt
    print()
    print(table(rows, ["step", "curve", "method", "forward_batch", "images", "images_per_s", "ratio_vs_loop",
                       "max_abs_diff_vs_loop", "max_abs_auc_diff_vs_loop", "allclose"]))
    verdict = all(r["allclose"] for r in rows)
    print(f"\nbatched and per-image curves {f'agree (allclose, atol {atol:g}, rtol 1e-3) everywhere' if verdict else 'DISAGREE somewhere: see allclose column'}"
          f"{' (TF32 convolutions)' if tf32 else ''}; largest AUC difference "
          f"{max(r.get('max_abs_auc_diff_vs_loop', 0.0) for r in rows):.2e}")
    print(f"wrote {out}")
    return 0 if verdict else 1


def time_step(classifier, variants: dict, x: torch.Tensor, saliency: torch.Tensor, targets: torch.Tensor, mode: str,
              step: int, args, atol: float, base: dict) -> list[dict]:
    """The per-image loop and each batched variant and chunk for one curve kind at one step."""
    device = x.device
    substrate = zero_substrate(x) if mode == "deletion" else blur_substrate(x)
    # Smaller steps cost ceil(H W / step) + 1 forwards per curve (225 at step 224): fewer images there.
    loop_count = args.loop_images if step >= 1792 else max(1, args.loop_images // 4)
    count = args.images if step >= 1792 else max(1, args.images // 2)
    base = {**base, "step": step, "points": math.ceil(x.shape[-2] * x.shape[-1] / step) + 1, "curve": mode}
    start = clock(device)
    loop = torch.stack([rise_loop(classifier, x[i : i + 1], saliency[i : i + 1], int(targets[i]),
                                  substrate[i : i + 1], mode, step) for i in range(loop_count)])
    seconds = clock(device) - start
    loop_rate = loop_count / seconds
    rows = [{**base, "method": "per-image-loop", "images": loop_count, "forward_batch": 1,
             "seconds": seconds, "images_per_s": loop_rate, "ratio_vs_loop": 1.0,
             "max_abs_diff_vs_loop": 0.0, "allclose": True, "loadavg_row": load_average()}]
    print(f"step {step:5d} {mode:9s} per-image-loop        {loop_rate:8.3f} img/s ({loop_count} images)", flush=True)
    for (name, forward), chunk in [(v, c) for v in variants.items() for c in args.chunk]:
        start = clock(device)
        curves = causal_curves(forward, x[:count], saliency[:count], targets[:count], substrate[:count], mode, step,
                               chunk)
        seconds = clock(device) - start
        rate = count / seconds
        both = min(loop_count, count)
        diff = (curves[:both].cpu() - loop[:both]).abs().max().item()
        auc_diff = (auc(curves[:both].cpu()) - auc(loop[:both])).abs().max().item()
        close = torch.allclose(curves[:both].cpu(), loop[:both], atol=atol, rtol=1e-3)
        rows.append({**base, "method": name, "images": count, "forward_batch": chunk,
                     "seconds": seconds, "images_per_s": rate, "ratio_vs_loop": rate / loop_rate,
                     "max_abs_diff_vs_loop": diff, "max_abs_auc_diff_vs_loop": auc_diff, "atol": atol,
                     "allclose": close, "loadavg_row": load_average()})
        print(f"step {step:5d} {mode:9s} {name:21s} chunk {chunk:4d} {rate:8.3f} img/s ({count} images), "
              f"x{rate / loop_rate:.2f} vs loop; curves {'match' if close else 'DIFFER'} "
              f"(max |diff| {diff:.2e} over {both} images)", flush=True)
    return rows
