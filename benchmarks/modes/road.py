"""ROAD imputation speed: the batched solver against the reference's per-image imputer.

For ``--images`` images at ``--size`` px, Grad-CAM maps of the offline model give ROAD's MoRF and
LeRF removals at the paper's 9 fractions (18 imputations per image). Timed:

* ``batched``: :func:`pipeline.metrics.linear_impute` on all ``images x 18`` systems at once
  (``--chunk`` systems per solve), per ``--dtype``;
* ``reference``: pytorch-grad-cam's copy of ``road_evaluation``'s ``NoisyLinearImputer`` (noise
  off), one image and mask at a time (``scipy.sparse.linalg.spsolve``), on the first
  ``--reference-images`` images.

Per variant: images per second (an image = its 18 imputations), wall and CPU seconds, the largest
difference between the two solutions, and the memory of one batched solve of ``--memory-systems``
systems, per system (peak CUDA allocation on a GPU; on the CPU the peak of the bytes held by the
tensors the solve creates, counted by a dispatch mode, since the resident set of a shared machine
is too noisy for it). Needs pytorch-grad-cam (the ``peers`` extra) for the reference.

Files: ``STEM.csv`` (default ``road-speed-<device>.csv``), one row per variant.
"""

from __future__ import annotations

import time
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from benchmarks.common import add_images, clock, load_average, load_images, table
from pipeline import load_model
from pipeline.jobs.baselines import baseline_saliency
from pipeline.metrics import ROAD_FRACTIONS, ImputationConfig, linear_impute, road_ranks, road_removed

NAME = "road-speed-{device}"
DEVICES = ("cpu", "cuda")
THREADS = 1
"""spsolve, the reference, runs on one thread: the batched solver gets one too."""


def add_arguments(parser) -> None:
    add_images(parser, 16)
    parser.add_argument("--size", type=int, default=224, help="image side in pixels (default 224)")
    parser.add_argument("--reference-images", type=int, default=16, help="images the reference imputes (0: skip)")
    parser.add_argument("--chunk", type=int, default=0, help="systems per batched solve (0: the solver's default, "
                        "8 on the CPU, 256 on a GPU)")
    parser.add_argument("--dtype", nargs="+", default=["float64", "float32"], choices=["float64", "float32"])
    parser.add_argument("--memory-systems", type=int, default=16, help="systems of the memory measurement")


def run(args, device: torch.device, results) -> int:
    images, maps = inputs(args, device)
    morf, lerf = road_removed(road_ranks(maps), ROAD_FRACTIONS)
    removed = torch.cat([morf, lerf], 1)  # (B, 18, H, W)
    base = {"size": args.size, "imputations_per_image": removed.shape[1]}
    reference, rows = None, []
    if args.reference_images:
        reference, wall, cpu = time_reference(images, removed, args.reference_images)
        rows.append({"variant": "reference (pytorch-grad-cam NoisyLinearImputer, spsolve)", "images": len(reference),
                     "wall_s": wall, "cpu_s": cpu, "images_per_s": len(reference) / wall, "max_abs_diff": 0.0,
                     "mib_per_system": "", **base, "loadavg_row": load_average()})
        path = results.write(rows)
    for dtype in args.dtype:
        tol = 1e-9 if dtype == "float64" else 1e-6
        config = ImputationConfig(tol=tol, dtype=getattr(torch, dtype), chunk=args.chunk)
        out, wall, cpu = time_batched(images, removed, config, device)
        memory = memory_mib(args.memory_systems, args.size, dtype, device) / args.memory_systems
        diff = float((out[:len(reference)].cpu() - reference).abs().max()) if reference is not None else float("nan")
        rows.append({"variant": f"batched {dtype} tol {tol:g} chunk {args.chunk or 'auto'}", "images": len(images),
                     "wall_s": wall, "cpu_s": cpu, "images_per_s": len(images) / wall, "max_abs_diff": diff,
                     "mib_per_system": round(memory, 2), **base, "loadavg_row": load_average()})
        path = results.write(rows)  # partial results survive an interrupt
    print(table(rows, ["variant", "images", "wall_s", "cpu_s", "images_per_s", "max_abs_diff", "mib_per_system"]))
    print(f"wrote {path}")
    return 0


def inputs(args, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``--images`` images ``(B, 3, size, size)`` in [0, 1] and their Grad-CAM maps for the top-1 class."""
    classifier = load_model("efficientnet_lite0", device=device)
    images01, _, source = load_images(args.images, (args.size, args.size), root=args.data)
    print(f"images: {source}")
    images01 = images01.to(device)
    with torch.no_grad():
        targets = classifier(classifier.normalize(images01)).argmax(1)
    return images01, baseline_saliency("gradcam", classifier, images01, targets, torch.arange(len(images01)))


def time_batched(images: torch.Tensor, removed: torch.Tensor, config: ImputationConfig, device: torch.device):
    """The imputations of every image and removal in one call: ``(B, 18, 3, H, W)``, wall s, CPU s."""
    repeated = images.repeat_interleave(removed.shape[1], 0)
    masks = removed.reshape(-1, 1, *removed.shape[-2:])
    wall, cpu = clock(device), time.process_time()
    out = linear_impute(repeated, masks, config)
    wall, cpu = clock(device) - wall, time.process_time() - cpu
    return out.view(*removed.shape[:2], *images.shape[1:]), wall, cpu


def time_reference(images: torch.Tensor, removed: torch.Tensor, count: int):
    """The reference's imputations of the first ``count`` images, one mask at a time, on the CPU."""
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    imputer = NoisyLinearImputer(noise=0.0)
    images, removed = images[:count].cpu(), removed[:count].cpu()
    outs = []
    wall, cpu = time.perf_counter(), time.process_time()
    for image, masks in zip(images, removed):  # the reference: one image and one mask at a time
        outs.append(torch.stack([imputer(image, (~mask).float()) for mask in masks]))
    return torch.stack(outs), time.perf_counter() - wall, time.process_time() - cpu


class _LiveTensors(TorchDispatchMode):
    """Counts the bytes of tensors that torch operations create and that are still alive, and
    their peak: the solve's own memory, independent of the allocator and of other processes.
    Views are not counted (they allocate nothing); in-place results are already counted."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self.owned: set[int] = set()

    def _free(self, key: int, size: int) -> None:
        self.owned.discard(key)
        self.live -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor) and tensor._base is None:
                key = tensor.untyped_storage().data_ptr()
                if key and key not in self.owned:
                    size = tensor.untyped_storage().nbytes()
                    self.owned.add(key)
                    self.live += size
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(tensor, self._free, key, size)
        return out


def memory_mib(systems: int, size: int, dtype: str, device: torch.device) -> float:
    """MiB that one solve of ``systems`` systems (half the pixels removed, in a disc) holds at its
    peak, inputs excluded: peak CUDA allocation on a GPU, :class:`_LiveTensors` on the CPU."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < size ** 2 / (2 * 3.1416))
    images = torch.rand(systems, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    masks = disc.expand(systems, 1, size, size).to(device)
    config = ImputationConfig(tol=1e-9 if dtype == "float64" else 1e-6, dtype=getattr(torch, dtype), chunk=systems)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        linear_impute(images, masks, config)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    with _LiveTensors() as tracker:
        linear_impute(images, masks, config)
    return tracker.peak / 2**20
