"""ROAD imputation speed: the batched solver against the reference's per-image imputer.

For ``--images`` development images at ``--size`` px, Grad-CAM maps of the offline model give
ROAD's MoRF and LeRF removals at the paper's 9 fractions (18 imputations per image). The script
times

* ``batched``: :func:`pipeline.metrics.linear_impute` on all ``images x 18`` systems at once
  (``--chunk`` systems per solve), per ``--dtype``;
* ``reference``: pytorch-grad-cam's copy of ``road_evaluation``'s ``NoisyLinearImputer`` (noise
  off), one image and mask at a time (``scipy.sparse.linalg.spsolve``), on the first
  ``--reference-images`` images;

and prints images per second (an image = its 18 imputations), CPU seconds, the largest difference
between the two solutions, and the memory of one batched solve of ``--memory-systems`` systems
per system (peak CUDA allocation on a GPU; on the CPU the peak of the bytes held by the tensors
the solve creates, counted by a dispatch mode, since the resident set of a shared machine is too
noisy for it). One row per variant goes to ``results/benchmarks/road-speed-<device>.csv``.

    python benchmarks/road_speed.py --images 16 --threads 1
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import time
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.data import discover, read_input  # noqa: E402
from pipeline.jobs.baselines import baseline_saliency  # noqa: E402
from pipeline.metrics import ImputationConfig, ROAD_FRACTIONS, linear_impute, road_ranks, road_removed  # noqa: E402
from pipeline.models import load_model  # noqa: E402

DATA_CANDIDATES = (REPO.parent / "shared" / "data" / "imagenet-val-100" / "val",
                   Path("/work/shared/data/imagenet-val-100/val"),
                   REPO / "shared" / "data" / "imagenet-val-100" / "val")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def inputs(count: int, size: int, device: torch.device, data: Path | None):
    """``count`` development images ``(B, 3, size, size)`` in [0, 1], their top-1 and Grad-CAM maps."""
    root = data or next((p for p in DATA_CANDIDATES if p.is_dir()), None)
    if root is None:
        sys.exit("error: development images not found; pass --data <folder of images>")
    classifier = load_model("efficientnet_lite0", device=device)
    records = discover(root, classifier.vocabulary, limit=count)
    images = torch.stack([read_input(r.path, (size, size))[0] for r in records]).to(device)
    with torch.no_grad():
        targets = classifier(classifier.normalize(images)).argmax(1)
    maps = baseline_saliency("gradcam", classifier, images, targets, torch.arange(len(images)))
    return images, maps


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_batched(images, removed, config: ImputationConfig, device):
    repeated = images.repeat_interleave(removed.shape[1], 0)
    masks = removed.reshape(-1, 1, *removed.shape[-2:])
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    out = linear_impute(repeated, masks, config)
    sync(device)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return out.view(*removed.shape[:2], *images.shape[1:]), wall, cpu


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


def time_reference(images, removed, count):
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    imputer = NoisyLinearImputer(noise=0.0)
    images, removed = images[:count].cpu(), removed[:count].cpu()
    outs = []
    wall, cpu = time.perf_counter(), time.process_time()
    for image, masks in zip(images, removed):  # the reference: one image and one mask at a time
        outs.append(torch.stack([imputer(image, (~mask).float()) for mask in masks]))
    return torch.stack(outs), time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--reference-images", type=int, default=16, help="images the reference imputes (0: skip)")
    parser.add_argument("--chunk", type=int, default=0, help="systems per batched solve (0: the solver's default, 8 on the CPU, 256 on a GPU)")
    parser.add_argument("--dtype", nargs="+", default=["float64", "float32"], choices=["float64", "float32"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (spsolve uses one)")
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--memory-systems", type=int, default=16, help="systems of the memory measurement")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    images, maps = inputs(args.images, args.size, device, args.data)
    morf, lerf = road_removed(road_ranks(maps), ROAD_FRACTIONS)
    removed = torch.cat([morf, lerf], 1)  # (B, 18, H, W)
    per_image = removed.shape[1]

    reference = None
    rows = []
    if args.reference_images:
        reference, wall, cpu = time_reference(images, removed, args.reference_images)
        rows.append({"variant": "reference (pytorch-grad-cam NoisyLinearImputer, spsolve)",
                     "images": len(reference), "wall_s": wall, "cpu_s": cpu,
                     "images_per_s": len(reference) / wall, "max_abs_diff": 0.0, "mib_per_system": ""})
    for dtype in args.dtype:
        tol = 1e-9 if dtype == "float64" else 1e-6
        config = ImputationConfig(tol=tol, dtype=getattr(torch, dtype), chunk=args.chunk)
        out, wall, cpu = time_batched(images, removed, config, device)
        memory = memory_mib(args.memory_systems, args.size, dtype, device) / args.memory_systems
        diff = float((out[:len(reference)].cpu() - reference).abs().max()) if reference is not None else float("nan")
        rows.append({"variant": f"batched {dtype} tol {tol:g} chunk {args.chunk or 'auto'}",
                     "images": len(images), "wall_s": wall, "cpu_s": cpu,
                     "images_per_s": len(images) / wall, "max_abs_diff": diff, "mib_per_system": round(memory, 2)})

    machine = f"{cpu_model()}, {os.cpu_count()} cores, {args.threads} torch thread(s)"
    if device.type == "cuda":
        machine = torch.cuda.get_device_name(device)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: {machine}; load average {load}; {args.size} px, {per_image} imputations per image")
    for row in rows:
        row.update(machine=machine, load=load, size=args.size, imputations_per_image=per_image)
        print(f"  {row['variant']:<62} {row['images']:>3} images  wall {row['wall_s']:8.2f} s  cpu {row['cpu_s']:8.2f} s"
              f"  {row['images_per_s']:7.3f} images/s  max |diff| {row['max_abs_diff']:.1e}  {row['mib_per_system']} MiB/system")
    out = args.out or REPO / "results" / "benchmarks" / f"road-speed-{device.type}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
