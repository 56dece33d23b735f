"""jacobgil's per-image loop, rewritten on its own, to check the ``jacobgil`` presets against.

jacobgil/pytorch-explain-black-box (``explain.py``) explains one image at a time. Its loop, as
docs/method.md describes it, is rewritten here from that description in plain torch: nothing
is imported from that repository or from ``pipeline``'s solver, masks or perturbations, so the
comparison below checks the project's batched solver against an independent statement of the same
algorithm:

* a 28x28 mask of ones, upsampled bilinearly (``align_corners=True``) to 224x224, the same for the
  three channels;
* the perturbed input ``x * m + b * (1 - m)`` in normalised space, ``b`` the median-11 blur of the
  image (what the script's code optimises) or the mean of that and the 11x11 sigma-5 Gaussian blur
  (what its README describes); OpenCV's borders: replicated for the median, reflected (101) for
  the Gaussian;
* fresh Gaussian noise of std 0.2 added to the perturbed input every iteration;
* loss ``l1 * mean|1 - m| + tv * TV_beta(m) + softmax(model(x_m))[c]`` with ``TV_beta(m) =
  mean |m[i+1,j] - m[i,j]|^beta + mean |m[i,j+1] - m[i,j]|^beta`` on the 28x28 mask (l1 0.01,
  tv 0.2, beta 3), ``c`` the top-1 class of the image;
* Adam, lr 0.1, 500 iterations, the mask clamped to ``[0, 1]`` after every step.

The noise is random. :func:`reference_mask` takes it from a ``noise(t)`` function, so a
comparison can give both sides the same draws (:func:`solver_noise` returns the draws
``pipeline.solve.solver.solve`` makes for an image seed). Without one it draws ``torch.randn``.

``python benchmarks/run.py jacobgil`` runs the same comparison at full length on the development
images; ``tests/solve/test_jacobgil_reference.py`` at 3 iterations on chelsea.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Noise = Callable[[int], torch.Tensor]
"""``noise(t)``: the noise added at iteration ``t``, ``(1, 3, H, W)``, std already applied."""


def normalise(image: torch.Tensor) -> torch.Tensor:
    """``(1, 3, H, W)`` RGB in [0, 1] to the model's input (ImageNet mean and std)."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (image - mean) / std


def median_11(image: torch.Tensor, size: int = 11) -> torch.Tensor:
    """Median over ``size x size`` windows of ``(1, 3, H, W)``, borders replicated (``cv2.medianBlur``)."""
    pad = size // 2
    padded = F.pad(image, (pad, pad, pad, pad), mode="replicate")
    _, channels, height, width = image.shape
    windows = padded.unfold(2, size, 1).unfold(3, size, 1)  # (1, 3, H, W, size, size)
    return windows.reshape(1, channels, height, width, size * size).median(dim=-1).values


def gaussian_11(image: torch.Tensor, size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """``cv2.GaussianBlur(image, (11, 11), 5)``: a normalised 2-D Gaussian, reflect-101 borders."""
    offsets = torch.arange(size, dtype=torch.float64) - size // 2
    weights = torch.exp(-(offsets**2) / (2 * sigma**2))
    weights = (weights / weights.sum()).float()
    kernel = (weights[:, None] * weights[None, :]).expand(3, 1, size, size)
    pad = size // 2
    return F.conv2d(F.pad(image, (pad, pad, pad, pad), mode="reflect"), kernel, groups=3)


def tv_norm(mask: torch.Tensor, beta: float) -> torch.Tensor:
    """The script's total variation of a ``(28, 28)`` mask."""
    rows = (mask[:-1, :] - mask[1:, :]).abs().pow(beta).mean()
    cols = (mask[:, :-1] - mask[:, 1:]).abs().pow(beta).mean()
    return rows + cols


def reference_mask(model: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, blur: str = "median",
                   iterations: int = 500, noise: Noise | None = None, *, l1_coeff: float = 0.01,
                   tv_coeff: float = 0.2, tv_beta: float = 3.0, lr: float = 0.1, mask_size: int = 28,
                   noise_std: float = 0.2) -> dict[str, torch.Tensor]:
    """One image through the script's loop.

    Args:
        model: maps a normalised ``(1, 3, H, W)`` batch to logits ``(1, C)``.
        image: ``(1, 3, H, W)`` RGB in [0, 1] (already resized to the model's input).
        blur: ``median`` (the script's code) or ``average`` (its README: mean of median and Gaussian).
        noise: the noise per iteration; default ``noise_std * torch.randn``.

    Returns:
        ``mask`` ``(28, 28)`` in [0, 1], ``target`` (0-d int64), ``p_trace`` ``(iterations,)`` the
        target's probability on the noisy perturbed input at each iteration.
    """
    if blur not in ("median", "average"):
        raise ValueError(f"blur must be 'median' or 'average', got {blur!r}")
    img = normalise(image)
    median = normalise(median_11(image))
    blurred = median if blur == "median" else 0.5 * (median + normalise(gaussian_11(image)))
    with torch.no_grad():
        target = model(img).argmax(dim=1)[0]
    mask = torch.ones(1, 1, mask_size, mask_size, requires_grad=True)
    optimizer = torch.optim.Adam([mask], lr=lr)
    trace = []
    for t in range(iterations):
        up = F.interpolate(mask, size=image.shape[-2:], mode="bilinear", align_corners=True).expand(1, 3, -1, -1)
        perturbed = img * up + blurred * (1 - up)
        perturbed = perturbed + (noise(t) if noise is not None else noise_std * torch.randn_like(perturbed))
        prob = F.softmax(model(perturbed), dim=1)[0, target]
        loss = l1_coeff * (1 - mask).abs().mean() + tv_coeff * tv_norm(mask[0, 0], tv_beta) + prob
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        mask.data.clamp_(0, 1)
        trace.append(prob.detach())
    return {"mask": mask.detach()[0, 0], "target": target, "p_trace": torch.stack(trace)}


def solver_noise(seed: int, shape: tuple[int, int, int], std: float = 0.2) -> Noise:
    """The noise ``pipeline.solve.solver.solve`` adds for the image of ``seed`` at each iteration
    (its per-image counter stream ``3 t + 2``; one mask per image)."""
    from pipeline.solve import counter_normal

    seeds = torch.tensor([seed])
    return lambda t: std * counter_normal(seeds, 3 * t + 2, shape)


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    denominator = float(a.norm() * b.norm())
    return float((a @ b) / denominator) if denominator > 0 else float("nan")


def compare(classifier, image: torch.Tensor, preset_name: str, iterations: int, seed: int = 0,
            yardstick: bool = False) -> dict:
    """Solve ``image`` ``(1, 3, H, W)`` with the project's preset and with the reference, same noise.

    With ``yardstick`` the reference also runs with other noise draws (seed + 1000): how far two
    runs of the script itself land apart, the scale for the differences at full length.
    """
    from pipeline.config import override, preset
    from pipeline.solve import solve

    config = override(preset(preset_name), [f"optim.iterations={iterations}"])
    blur = {"jacobgil": "average", "jacobgil-code": "median"}[preset_name]
    shape, std = tuple(image.shape[1:]), config.objective.noise_std
    ours = solve(classifier, image, config, seeds=torch.tensor([seed]))
    ref = reference_mask(classifier.module, image, blur, iterations, solver_noise(seed, shape, std))
    mine, theirs = ours.masks[0, 0].cpu(), ref["mask"]
    row = {"preset": preset_name, "iterations": iterations, "target_ours": int(ours.targets[0]),
           "target_reference": int(ref["target"]), **agreement(mine, theirs),
           "mask_mean_ours": float(mine.mean()), "mask_mean_reference": float(theirs.mean()),
           "p_last_iteration_reference": float(ref["p_trace"][-1]),
           "p_final_ours_no_noise": float(ours.p_final[0])}
    if yardstick:
        other = reference_mask(classifier.module, image, blur, iterations, solver_noise(seed + 1000, shape, std))
        row.update({f"{key}_reference_other_noise": value for key, value in agreement(theirs, other["mask"]).items()})
    return row


def agreement(a: torch.Tensor, b: torch.Tensor) -> dict:
    """How alike two ``(28, 28)`` masks are: largest and mean absolute difference, Pearson r."""
    diff = (a - b).abs()
    return {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()), "pearson": pearson(a, b)}
