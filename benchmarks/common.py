"""What every benchmark mode shares: the device and machine, images, the clock, peak memory, tables,
the models used for timing, and the options spelled the same in every mode.

Not part of the package: ``benchmarks/run.py`` puts the repository root on ``sys.path`` and the
modes import this module as ``benchmarks.common``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results" / "benchmarks"
# The development set beside the checkout, or copied inside it (as on a GPU machine, where only
# the checkout travels).
DEFAULT_DATA = next((p for p in (REPO.parent / "shared" / "data" / "imagenet-val-100" / "val",
                                 REPO / "shared" / "data" / "imagenet-val-100" / "val") if p.is_dir()),
                    REPO.parent / "shared" / "data" / "imagenet-val-100" / "val")


# ---------------------------------------------------------------- options spelled the same everywhere

def add_images(parser: argparse.ArgumentParser, count: int, what: str = "images") -> None:
    """``--images N`` (the first N of the sorted development set) and ``--data DIR``."""
    parser.add_argument("--images", type=int, default=count, help=f"{what}: the first N of the sorted image folder")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="ImageNet-style image folder (default: the development set)")


def add_batch_size(parser: argparse.ArgumentParser, default: int | list[int], what: str = "images solved together"
                   ) -> None:
    """``--batch-size``: one value, or several (a list default) where the mode sweeps them."""
    if isinstance(default, list):
        parser.add_argument("--batch-size", type=int, nargs="+", default=default,
                            help=f"{what}; several values: each is measured")
    else:
        parser.add_argument("--batch-size", type=int, default=default, help=what)


def early_stop(text: str) -> tuple[int, float]:
    """``WINDOW,TOL`` (``optim.stop_window``, ``optim.stop_tol``) -> ``(25, 0.01)``."""
    try:
        window, tol = text.split(",")
        return int(window), float(tol)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WINDOW,TOL such as 25,0.01, got {text!r}") from None


def stop_overrides(setting: tuple[int, float]) -> list[str]:
    """The ``--set`` overrides of an early-stopping setting."""
    return [f"optim.stop_window={setting[0]}", f"optim.stop_tol={setting[1]}"]


# ---------------------------------------------------------------- device and machine

def pick_device(name: str) -> torch.device:
    """``cpu`` or ``cuda``; ``cuda`` without a GPU exits with a clear message (status 1)."""
    if name == "cuda":
        if not torch.cuda.is_available():
            version = torch.version.cuda or "none (CPU-only build)"
            sys.exit(f"error: --device cuda was asked for, but torch {torch.__version__} sees no CUDA GPU "
                     f"(torch CUDA runtime: {version}; CUDA_VISIBLE_DEVICES="
                     f"{os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}). Run on a GPU machine or use --device cpu.")
        return torch.device("cuda", torch.cuda.current_device())
    if name != "cpu":
        sys.exit(f"error: --device must be cpu or cuda, got {name!r}")
    return torch.device("cpu")


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return match.group(1).strip() if match else (platform.processor() or platform.machine())


def cpu_flags() -> set[str]:
    try:
        match = re.search(r"^flags\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
    except OSError:
        return set()
    return set(match.group(1).split()) if match else set()


def machine(device: torch.device) -> dict[str, Any]:
    """What ran the benchmark: a one-line ``machine`` string and its parts."""
    cores = os.cpu_count() or 0
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = cores
    simd = sorted(f for f in cpu_flags() if f in {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
    info: dict[str, Any] = {
        "cpu": cpu_model(), "cores": usable, "torch_threads": torch.get_num_threads(),
        "simd": "+".join(simd) or "-", "torch": torch.__version__, "python": platform.python_version(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_mem_gib=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
        info["machine"] = f"{props.name} ({info['gpu_mem_gib']} GiB), host {info['cpu']} x{usable}"
    else:
        info["machine"] = f"{info['cpu']} ({usable} cores, {info['torch_threads']} torch threads, {info['simd']})"
    return info


def load_average() -> str:
    """1/5/15-minute load averages, e.g. ``"2.01/1.57/0.87"`` (other users share this machine)."""
    try:
        return "/".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(device: torch.device) -> float:
    """Wall time after all queued device work has finished."""
    synchronize(device)
    return time.perf_counter()


# ---------------------------------------------------------------- models

def load_classifier(spec: str, device: torch.device) -> tuple:
    """Real weights where available (EfficientNet-Lite0, or ``<arch>@<state_dict file>``), else random
    weights (timing does not need real ones). Returns ``(classifier, "imagenet" | "file" | "random")``."""
    from pipeline import ModelUnavailableError, load_model

    if "@" in spec:
        return load_model(spec, device=device), "file"
    if spec == "efficientnet_lite0":
        try:
            return load_model(spec, pretrained=True, device=device), "imagenet"
        except ModelUnavailableError as error:
            print(f"note: {spec} weights unavailable ({error}); timing with random weights")
    return load_model(spec, pretrained=False, device=device), "random"


# ---------------------------------------------------------------- images

def load_images(count: int, size: tuple[int, int] = (224, 224), root: Path | None = None,
                require_real: bool = False) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``count`` RGB images in [0, 1] ``(N, 3, H, W)``, their labels ``(N,)`` (-1 unknown), and a
    description of the source.

    Real ImageNet validation images (the first ``count`` of the sorted folder) when the
    development set is present; else scikit-image's pictures, repeated as needed (with
    ``require_real`` the caller gets an empty batch instead).
    """
    root = DEFAULT_DATA if root is None else root
    if root.is_dir():
        from pipeline.data import ImageDataset, discover

        records = discover(root, limit=count)
        dataset = ImageDataset(records, size)
        items = [dataset[i] for i in range(len(dataset))]
        bad = [records[i].relpath for i, item in enumerate(items) if not item["ok"]]
        if bad:
            print(f"warning: {len(bad)} unreadable images skipped: {bad[:3]}")
        items = [item for item in items if item["ok"]]
        if len(items) < count:
            print(f"note: {root} holds {len(items)} readable images, fewer than the {count} asked; "
                  "repeating them")
        images = torch.stack([items[i % len(items)]["image"] for i in range(count)])
        labels = torch.tensor([items[i % len(items)]["label"] for i in range(count)])
        return images, labels, f"{root} (first {min(count, len(items))} of sorted list)"
    if require_real:
        return torch.empty(0, 3, *size), torch.empty(0, dtype=torch.long), f"{root} absent"
    import skimage.data

    names = ["chelsea", "coffee", "astronaut", "rocket", "cat", "hubble_deep_field", "immunohistochemistry",
             "motorcycle_left", "retina", "colorwheel"]
    pictures = []
    for name in names:
        try:
            array = getattr(skimage.data, name)()
        except Exception:  # a picture needing pooch/network, or absent in this version
            continue
        if array.ndim == 3 and array.shape[2] >= 3:
            pictures.append(torch.from_numpy(array[..., :3].copy()).permute(2, 0, 1).float().div(255))
    resized = [torch.nn.functional.interpolate(p[None], size=size, mode="bilinear", antialias=True,
                                               align_corners=False)[0].clamp(0, 1) for p in pictures]
    images = torch.stack([resized[i % len(resized)] for i in range(count)])
    return images, torch.full((count,), -1), f"scikit-image pictures ({len(resized)} distinct, repeated)"


# ---------------------------------------------------------------- memory

def _status_kib(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _malloc_trim() -> None:
    """glibc ``malloc_trim(0)``: return free heap memory to the OS (no-op elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory increase of one measured block, in MiB.

    CUDA: ``torch.cuda.max_memory_allocated`` minus what was allocated at the start (tensors only,
    not the caching allocator's reserve). CPU: the process's peak resident set size (``VmHWM``)
    minus its resident size at the start; Linux lets a process reset ``VmHWM`` by writing ``5`` to
    ``/proc/self/clear_refs``, so each block gets its own peak. glibc keeps freed memory resident
    and reuses it, which would hide part of a block's peak, so ``malloc_trim(0)`` runs first; the
    CPU figure is still approximate (a lower bound where the allocator reuses resident pages). Where that is not possible, the
    ``getrusage`` peak is used, which only grows: then a block's figure is a lower bound and is
    marked ``method = "ru_maxrss (monotonic)"``.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.method = "cuda.max_memory_allocated" if device.type == "cuda" else "VmHWM reset"

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            _malloc_trim()  # hand freed heap pages back first, or reused pages would hide the peak
            try:
                with open("/proc/self/clear_refs", "w") as handle:
                    handle.write("5")
                self.start = _status_kib("VmRSS") * 1024
            except (OSError, TypeError):
                import resource

                self.method = "ru_maxrss (monotonic)"
                self.start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.method == "VmHWM reset":
            peak = _status_kib("VmHWM") * 1024
        else:
            import resource

            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.peak_mib = max(0, peak - self.start) / 2**20


# ---------------------------------------------------------------- printing

def cell(value: Any) -> Any:
    """A value as a CSV or table cell: floats to 6 significant digits, 0-d tensors unwrapped."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, torch.Tensor):
        return cell(value.item())
    return value


def table(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain fixed-width text table of ``columns`` of ``rows``."""
    rows = list(rows)
    cells = [[str(cell(row.get(c, ""))) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)
