"""Solver throughput: one image at a time (jacobgil's way) against the batched solver.

What is timed: iterations of ``pipeline.solve`` on a preset (``--preset``, default ``blur``). Each
configuration runs one ``solve`` call with ``warmup + timed`` iterations; the clock starts when
the last warm-up iteration has finished and stops when the last timed one has (a device
synchronisation at those two points only), so model set-up, the target forward pass and the final
scoring are outside the timed window.

* ``img_iter_per_s`` = images x timed iterations / seconds: solver iterations (forward +
  backward to the input + Adam step) done per second, summed over the images of the batch.
* ``masks_per_s_at_preset`` = ``img_iter_per_s / preset iterations``: finished masks per second
  at the preset's full length, set-up excluded.
* ``per-image`` mode (jacobgil's way, the baseline): the images one after another, batch 1,
  fp32; ``batched`` mode: ``B`` images in one call, fp32 or bf16 autocast. ``ratio_vs_per_image``
  is a row's ``img_iter_per_s`` over the baseline's, measured in the same run.
* ``model-only`` (``--model-only``) and ``layer-bound`` (``--layer-bound``) rows split the gap to
  the matmul rate (benchmarks/README.md, How far from the limit).

Files: ``STEM.csv`` (default ``solver-<device>.csv``) and ``STEM-roofline.png``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from pathlib import Path

import torch

from benchmarks.common import PeakMemory, clock, load_average, load_classifier, load_images, synchronize, table
from pipeline import override, preset
from pipeline.solve import solve

NAME = "solver-{device}"
DEVICES = ("cpu", "cuda")
THREADS = 0
CPU_MODELS = ["efficientnet_lite0"]
CUDA_MODELS = ["efficientnet_lite0", "torchvision:resnet50", "torchvision:vgg19"]


class _OutOfTime(Exception):
    """Raised from the solver callback to end a configuration early (time budget spent)."""


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 runs on hardware paths: a bf16-capable GPU, or a CPU that oneDNN can run bf16 on
    (AVX512-BF16 / AMX). Without it, CPU bf16 autocast falls back to very slow reference kernels."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


# ---------------------------------------------------------------- timing

def time_solve(classifier, images: torch.Tensor, config, warmup: int, timed: int, seeds: torch.Tensor,
               budget_s: float) -> dict:
    """Run one ``solve`` of ``warmup + timed`` iterations; time the last ``timed``.

    On CPU the timed loop stops early (at least one timed iteration) when the next iteration would
    end past ``budget_s``; the rate is then over the iterations done (``timed_iterations``).
    """
    device = classifier.device
    config = override(config, [f"optim.iterations={warmup + timed}"])
    state: dict = {"start": None, "end": None, "done": 0}
    check_budget = device.type == "cpu"  # clock() on CUDA synchronises; keep the loop free of syncs

    def callback(iteration: int, loss: torch.Tensor) -> None:
        if iteration == warmup - 1:
            state["start"] = clock(device)
        elif iteration >= warmup:
            state["done"] = iteration - warmup + 1
            if iteration == warmup + timed - 1:
                state["end"] = clock(device)
            elif check_budget:
                elapsed = time.perf_counter() - state["start"]
                if elapsed * (state["done"] + 1) / state["done"] > budget_s:
                    state["end"] = time.perf_counter()
                    raise _OutOfTime

    begin = clock(device)
    try:
        solve(classifier, images, config, seeds=seeds, callback=callback)
    except _OutOfTime:
        pass
    wall = clock(device) - begin
    seconds = state["end"] - state["start"]
    return {"seconds": seconds, "timed_iterations": state["done"], "wall_s": wall,
            "img_iter_per_s": len(images) * state["done"] / seconds}


def per_image(classifier, images: torch.Tensor, config, warmup: int, timed: int, budget_s: float) -> dict:
    """jacobgil's way: each image alone (batch 1, fp32), one after the other."""
    config = override(config, ["precision=fp32"])
    seconds, iterations, wall = 0.0, 0, 0.0
    for i in range(len(images)):
        share = budget_s / len(images)
        run = time_solve(classifier, images[i : i + 1], config, warmup, timed, torch.tensor([i]), share)
        seconds, iterations, wall = seconds + run["seconds"], iterations + run["timed_iterations"], wall + run["wall_s"]
    return {"seconds": seconds, "timed_iterations": iterations / len(images), "wall_s": wall,
            "img_iter_per_s": iterations / seconds}


# ---------------------------------------------------------------- FLOPs and peak rates

def solver_flops(classifier, image: torch.Tensor, config) -> tuple[int, int]:
    """FLOPs per image of one solver iteration, two ways.

    ``per_iteration``: FLOPs of ``solve`` with 2 iterations minus with 1 (so set-up and final
    scoring cancel): exactly the forward + backward-to-input of the model plus whatever
    convolutions the iteration adds (e.g. the paper preset's mask smoothing).
    ``model``: one forward + backward to a ``requires_grad`` input through the frozen model.
    Counted with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and convolutions; a FLOP
    is a multiply or an add, so a multiply-add is 2).
    """
    from torch.utils.flop_counter import FlopCounterMode

    totals = []
    for iterations in (1, 2):
        cfg = override(config, [f"optim.iterations={iterations}", "precision=fp32"])
        with FlopCounterMode(display=False) as counter:
            solve(classifier, image[:1], cfg)
        totals.append(counter.get_total_flops())
    x = classifier.normalize(image[:1].to(classifier.device)).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    with FlopCounterMode(display=False) as counter:
        classifier(x)[:, 0].sum().backward()
    return totals[1] - totals[0], counter.get_total_flops()


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int, seconds: float = 1.0) -> float:
    """Measured dense ``n x n`` matmul rate in FLOP/s (2 n^3 per product), repeated for ~``seconds``."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    for _ in range(2):
        c = a @ b
    start = clock(device)
    reps = 0
    while True:
        c = a @ b
        reps += 1
        if reps % 10 == 0 or device.type == "cpu":
            if clock(device) - start > seconds:
                break
    elapsed = clock(device) - start
    del c
    return 2 * n**3 * reps / elapsed


def peak_rates(device: torch.device, bf16_ok: bool) -> dict[str, float]:
    """Measured matmul TFLOP/s for bf16 and fp32 (torch defaults: on CUDA fp32 matmul is full fp32)."""
    if device.type == "cuda":
        sizes = {"bf16": 8192, "fp32": 8192}
    else:
        sizes = {"bf16": 1024 if bf16_ok else 256, "fp32": 1024}
    rates = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        rates[name] = matmul_rate(device, dtype, sizes[name]) / 1e12
    return rates


# ---------------------------------------------------------------- the benchmark

def prepare(classifier, options: frozenset[str]):
    """The network a configuration label's options ask for (``fold``, ``cl``, ``compile[=mode]``;
    ``cudnn`` is a run-time flag, see :func:`cudnn_benchmark`)."""
    if "fold" in options:
        classifier = classifier.folded()
    if "cl" in options:  # weights in channels_last too (the solver already feeds channels_last input)
        module = copy.deepcopy(classifier.module).to(memory_format=torch.channels_last)
        classifier = dataclasses.replace(classifier, module=module)
    for option in options:
        if option.split("=")[0] == "compile":
            mode = option.partition("=")[2] or None
            classifier = dataclasses.replace(classifier, module=torch.compile(classifier.module, mode=mode))
    return classifier


@contextlib.contextmanager
def cudnn_benchmark(on: bool):
    """``torch.backends.cudnn.benchmark`` set to ``on`` for the block: cuDNN times its algorithms for
    each new convolution shape and keeps the fastest (the solver's shapes repeat every iteration)."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = on
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def time_model(classifier, images: torch.Tensor, precision: str, warmup: int, timed: int) -> dict:
    """The model alone, as the solver uses it: forward + backward to the (channels_last) input of a
    batch, ``warmup + timed`` times; the last ``timed`` are timed. No mask, perturbation or optimiser."""
    device = classifier.device
    x = classifier.normalize(images.to(device)).contiguous(memory_format=torch.channels_last)
    targets = torch.zeros(len(x), 1, dtype=torch.int64, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    begin = clock(device)
    for i in range(warmup + timed):
        if i == warmup:
            start = clock(device)
        inputs = x.detach().requires_grad_(True)
        with autocast:
            logits = classifier(inputs).float()
        torch.autograd.grad(logits.gather(1, targets).sum(), inputs)
    end = clock(device)
    return {"seconds": end - start, "timed_iterations": timed, "wall_s": end - begin,
            "img_iter_per_s": len(x) * timed / (end - start)}


def layer_bound(classifier, batch: int, precision: str, repeats: int = 10) -> dict:
    """A ceiling for any implementation built on these kernels: every convolution and linear layer
    of the network timed alone (forward + gradient to its input, cuDNN autotuned, channels_last,
    weights pre-cast), summed over the network; everything else (activations, BatchNorm, pooling,
    the solver's own work) counted as free. Returns ``time_model``'s keys plus ``flops`` per image."""
    from torch.nn import functional as F
    from torch.utils.flop_counter import FlopCounterMode

    device = classifier.device
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    calls: list[tuple] = []
    layers = [m for m in classifier.module.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    hooks = [m.register_forward_hook(lambda m, args, out: calls.append((m, tuple(args[0].shape)))) for m in layers]
    try:
        with torch.no_grad():
            classifier(torch.zeros(batch, 3, *classifier.input_size, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    seconds, flops = 0.0, 0
    with cudnn_benchmark(True):
        for layer, shape in calls:
            x = torch.randn(shape, device=device, dtype=dtype)
            weight = layer.weight.detach().to(dtype)
            if isinstance(layer, torch.nn.Conv2d):
                x, weight = x.contiguous(memory_format=torch.channels_last), weight.contiguous(memory_format=torch.channels_last)
                op = lambda t, w=weight, m=layer: F.conv2d(t, w, None, m.stride, m.padding, m.dilation, m.groups)  # noqa: E731
            else:
                op = lambda t, w=weight: F.linear(t, w)  # noqa: E731
            x.requires_grad_(True)
            out = op(x)
            grad = torch.ones_like(out)
            with FlopCounterMode(display=False) as counter:
                torch.autograd.grad(op(x), x, grad)
            flops += counter.get_total_flops()
            for _ in range(3):
                torch.autograd.grad(op(x), x, grad)
            start = clock(device)
            for _ in range(repeats):
                torch.autograd.grad(op(x), x, grad)
            seconds += (clock(device) - start) / repeats
    return {"seconds": seconds, "timed_iterations": 1, "wall_s": seconds * repeats, "img_iter_per_s": batch / seconds,
            "flops": flops / batch, "layers": len(calls)}


def plan_configurations(spec: str, args, device: torch.device, bf16_ok: bool, count: int) -> list[tuple]:
    """The configurations timed for one model: ``(mode, batch, label, warm-up, note)``; the label is
    the precision and then "+"-joined options (fold, cl, cudnn, compile[=mode]), e.g.
    "bf16+fold+cudnn+compile"."""
    plan = [("per-image", 1, "fp32", args.warmup, f"{count} images one at a time")]
    slow_bf16 = False
    for batch in args.batch_size:
        for precision in args.precisions:
            if batch == 1 and precision == "fp32":
                continue  # that is the per-image baseline
            note, warmup = "", args.warmup
            if precision == "bf16" and not bf16_ok:
                if device.type == "cuda":
                    print(f"  skip bf16: {torch.cuda.get_device_name(device)} has no bf16 support")
                    continue
                if slow_bf16 and not args.force_bf16:
                    print(f"  skip batched {batch} bf16: no native bf16 on this CPU (see the first bf16 row); "
                          "--force-bf16 runs it")
                    continue
                slow_bf16, warmup = True, 1
                note = "CPU without native bf16 (no AVX512-BF16/AMX): oneDNN reference kernels; run once"
            plan.append(("batched", batch, precision, warmup, note))
    if args.fold:  # BatchNorm folded into the convolutions (as perturb masks runs), at every batch
        plan += [(mode, batch, precision + "+fold", warmup, note) for mode, batch, precision, warmup, note in plan
                 if mode == "batched"]
        plan.append(("batched", 1, "fp32+fold", args.warmup, "one image, BatchNorm folded"))
    largest = max(args.batch_size)
    fast = "bf16" if bf16_ok else "fp32"
    if spec in args.compile_models:  # torch.compile of the network, at the largest batch
        plan.append(("batched", largest, fast + "+compile", args.warmup, "torch.compile(module); compile time in wall_s"))
    for label in args.variants:
        if spec in args.compile_models or "compile" not in label:
            plan.append(("batched", largest, label, args.warmup, "compile time in wall_s" if "compile" in label else ""))
    if args.model_only:
        plan += [("model-only", batch, label, warmup, "forward + backward to the input only")
                 for mode, batch, label, warmup, _ in list(plan) if mode == "batched" and batch == largest
                 and ("compile" not in label or "compile" in args.model_only)]
    if args.layer_bound:
        plan.append(("layer-bound", largest, fast, 0, "convolutions alone, cuDNN autotuned; the rest free; run once"))
    return plan


def run_plan(classifier, images: torch.Tensor, config, plan: list[tuple], args, count: int) -> dict[int, list]:
    """Every configuration of ``plan``, ``--repeats`` times round-robin (so a change of load on a
    shared machine hits all of them alike); returns the runs of each configuration by its index."""
    device = classifier.device
    models: dict[frozenset, object] = {}
    runs: dict[int, list] = {i: [] for i in range(len(plan))}
    for repeat in range(args.repeats):
        for i, (mode, batch, label, warmup, note) in enumerate(plan):
            if repeat and "run once" in note:
                continue
            precision, *options = label.split("+")
            options = frozenset(options)
            cfg = override(config, [f"precision={precision}"])
            try:
                key = options - {"cudnn"}
                if key not in models:
                    models[key] = prepare(classifier, key)
                model = models[key]
                with PeakMemory(device) as memory, cudnn_benchmark("cudnn" in options or args.cudnn_benchmark):
                    if mode == "per-image":
                        run = per_image(classifier, images[:count], cfg, warmup, args.iterations, args.budget)
                    elif mode == "model-only":
                        run = time_model(model, images[:batch], precision, warmup, args.iterations)
                    elif mode == "layer-bound":
                        run = layer_bound(classifier.folded(), batch, precision)
                    else:
                        run = time_solve(model, images[:batch], cfg, warmup, args.iterations,
                                         torch.arange(batch), args.budget)
            except torch.OutOfMemoryError:
                print(f"  {mode} batch {batch} {label}: out of memory, skipped")
                torch.cuda.empty_cache()
                continue
            except Exception as error:  # torch.compile can fail on a model or a platform: report, go on
                if not options:
                    raise
                print(f"  {mode} batch {batch} {label}: failed, skipped ({type(error).__name__}: {str(error)[:300]})")
                continue
            run.update(warmup=warmup, memory=memory)
            runs[i].append(run)
            print(f"  [{repeat + 1}/{args.repeats}] {mode:11s} batch {batch:3d} {label}: "
                  f"{run['img_iter_per_s']:8.2f} img-iter/s (load {load_average()})", flush=True)
    return runs


def benchmark_model(spec: str, device: torch.device, images: torch.Tensor, args, peaks: dict[str, float],
                    bf16_ok: bool) -> list[dict]:
    """The rows of one model: each configuration's median rate over its runs, its largest memory
    peak, FLOPs and the share of the measured matmul rates."""
    classifier, weights = load_classifier(spec, device)
    config = preset(args.preset)
    full = config.optim.iterations
    per_iter_flops, model_flops = solver_flops(classifier, images, config)
    print(f"\n== {spec} ({weights} weights) on {device}: {args.preset} preset ({full} iterations); "
          f"{per_iter_flops / 1e9:.2f} GFLOP per image-iteration (model fwd+bwd-to-input {model_flops / 1e9:.2f})")
    count = min(args.per_image_images, len(images))
    plan = plan_configurations(spec, args, device, bf16_ok, count)
    runs = run_plan(classifier, images, config, plan, args, count)
    rows: list[dict] = []
    baseline_rate = None
    for i, (mode, batch, precision, warmup, note) in enumerate(plan):
        if not runs[i]:
            continue
        rates = sorted(r["img_iter_per_s"] for r in runs[i])
        median = rates[len(rates) // 2] if len(rates) % 2 else 0.5 * (rates[len(rates) // 2 - 1] + rates[len(rates) // 2])
        chosen = min(runs[i], key=lambda r: abs(r["img_iter_per_s"] - median))
        memory = max(runs[i], key=lambda r: r["memory"].peak_mib)["memory"]
        if chosen["timed_iterations"] < args.iterations and mode == "batched":
            note = (note + "; " if note else "") + f"cut to {chosen['timed_iterations']} timed iterations by --budget"
        baseline_rate = baseline_rate or median  # the per-image row comes first
        flops = chosen.get("flops") or (model_flops if mode == "model-only" else per_iter_flops)
        achieved = flops * median / 1e12
        row = {"model": spec, "weights": weights, "device": device.type, "mode": mode, "batch": batch,
               "precision": precision, "preset": args.preset, "preset_iterations": full,
               "warmup_iterations": chosen["warmup"], "timed_iterations": chosen["timed_iterations"],
               "img_iter_per_s": median, "ms_per_img_iter": 1000 / median, "masks_per_s_at_preset": median / full,
               "ratio_vs_per_image": median / baseline_rate,
               "peak_mem_per_image_mb": memory.peak_mib / batch, "mem_method": memory.method,
               "gflop_per_img_iter": flops / 1e9, "achieved_tflops": achieved,
               "matmul_bf16_tflops": peaks["bf16"], "matmul_fp32_tflops": peaks["fp32"],
               "ratio_to_bf16_matmul": achieved / peaks["bf16"], "ratio_to_fp32_matmul": achieved / peaks["fp32"],
               "runs": len(rates), "img_iter_per_s_each_run": " ".join(f"{r['img_iter_per_s']:.4g}" for r in runs[i]),
               "wall_s": chosen["wall_s"], "loadavg_row": load_average(), "note": note}
        rows.append(row)
        print(f"  {mode:11s} batch {batch:3d} {precision}: {median:8.2f} img-iter/s ({1000 / median:7.1f} ms), "
              f"{median / full:7.3f} masks/s at {full} it, x{row['ratio_vs_per_image']:.2f} vs per-image, "
              f"{row['peak_mem_per_image_mb']:.0f} MiB/img, {achieved:.3f} TFLOP/s "
              f"({100 * row['ratio_to_bf16_matmul']:.1f}% of bf16 matmul)"
              f"{' (' + note + ')' if note else ''}", flush=True)
    del classifier
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows

# ---------------------------------------------------------------- figure

def roofline_figure(rows: list[dict], path: Path) -> Path | None:
    """Achieved TFLOP/s per configuration against the measured matmul rates (one panel per model):
    horizontal bars, coloured by mode (per-image, batched solver, model alone, layer bound)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        print("matplotlib missing: no figure")
        return None
    colours = {"per-image": "tab:grey", "batched": "tab:blue", "model-only": "tab:green", "layer-bound": "tab:purple"}
    models = list(dict.fromkeys(r["model"] for r in rows))
    most = max(sum(r["model"] == m for r in rows) for m in models)
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 1.2 + 0.32 * most), squeeze=False)
    for ax, model in zip(axes[0], models):
        mine = [r for r in rows if r["model"] == model][::-1]  # first row on top
        labels = [f"{r['mode']} B{r['batch']} {r['precision']}" for r in mine]
        values = [float(r["achieved_tflops"]) for r in mine]
        ax.barh(range(len(mine)), values, color=[colours.get(r["mode"], "tab:blue") for r in mine])
        for i, r in enumerate(mine):
            ax.text(values[i], i, f" {100 * float(r['ratio_to_bf16_matmul']):.1f}%", va="center", fontsize=6)
        ax.set_yticks(range(len(mine)), labels, fontsize=6)
        bf16 = float(mine[0]["matmul_bf16_tflops"])
        ax.axvline(bf16, color="tab:orange", ls="--", lw=1, label=f"bf16 matmul (measured) {bf16:.0f}")
        ax.axvline(0.4 * bf16, color="tab:red", ls=":", lw=1, label="40% of it")
        ax.axvline(float(mine[0]["matmul_fp32_tflops"]), color="tab:blue", ls=":", lw=1, label="fp32 matmul (measured)")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("achieved TFLOP/s (% of the bf16 matmul rate)")
        ax.set_title(f"{model}: {float(mine[0]['gflop_per_img_iter']):.2f} GFLOP / image-iteration", fontsize=9)
        ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3)
    fig.suptitle(f"solver iteration: achieved TFLOP/s vs measured matmul rate\n{rows[0]['machine']}, "
                 f"torch {rows[0]['torch']}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- the mode

def add_arguments(parser) -> None:
    parser.add_argument("--models", nargs="+", help="model specs (default: efficientnet_lite0 on cpu; "
                        "+ torchvision:resnet50 torchvision:vgg19 on cuda, random weights)")
    parser.add_argument("--preset", default="blur", help="solver preset timed (default blur)")
    parser.add_argument("--iterations", type=int, default=20, help="timed iterations per configuration (default 20)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up iterations (default 2 cpu, 5 cuda)")
    parser.add_argument("--batch-size", type=int, nargs="+", default=None, help="batched sizes, each timed "
                        "(default 1 8 16 cpu, 1 8 32 64 cuda); batch 1 fp32 is the per-image baseline itself")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--per-image-images", type=int, default=None,
                        help="images solved one at a time for the baseline (default 4 cpu, 8 cuda)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of every configuration, round-robin; "
                        "rows report the median rate (default 3)")
    parser.add_argument("--budget", type=float, default=120.0, help="CPU: seconds of timed loop per "
                        "configuration before it is cut short (default 120)")
    parser.add_argument("--force-bf16", action="store_true", help="run every bf16 configuration even on a CPU "
                        "without native bf16")
    parser.add_argument("--fold", action="store_true", help="also time every batched configuration (and "
                        "batch 1) with BatchNorm folded into the convolutions (pipeline.folding)")
    parser.add_argument("--compile-models", nargs="*", default=[], help="models also timed through "
                        "torch.compile, at the largest batch (bf16 where supported)")
    parser.add_argument("--variants", nargs="*", default=[], help="more configurations at the largest batch: "
                        "a precision and '+'-joined options fold (BatchNorm folded), cl (channels_last weights), "
                        "cudnn (cudnn.benchmark), compile or compile=<mode> (torch.compile; only for "
                        "--compile-models), e.g. bf16+fold+cudnn+compile=max-autotune-no-cudagraphs")
    parser.add_argument("--model-only", nargs="?", const="eager", default="", choices=["", "eager", "compile"],
                        help="also time the bare network (forward + backward to the input) for every "
                        "configuration at the largest batch; 'compile' includes the compiled ones")
    parser.add_argument("--layer-bound", action="store_true", help="also time each convolution alone "
                        "(forward + input gradient, cuDNN autotuned) and report their sum as a ceiling")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True "
                        "for every configuration")
    parser.add_argument("--data", type=Path, default=None, help="ImageNet-style folder (default: the development "
                        "set, else scikit-image's pictures)")
    parser.add_argument("--replot", type=Path, metavar="CSV", help="only redraw the roofline figure of a "
                        "solver CSV written earlier (beside it, as <stem>-roofline.png)")


def run(args, device: torch.device, results) -> int:
    if args.replot:
        import csv

        with open(args.replot, newline="") as handle:
            print(f"wrote {roofline_figure(list(csv.DictReader(handle)), args.replot.with_name(args.replot.stem + '-roofline.png'))}")
        return 0
    cuda = device.type == "cuda"
    args.models = args.models or (CUDA_MODELS if cuda else CPU_MODELS)
    args.batch_size = args.batch_size or ([1, 8, 32, 64] if cuda else [1, 8, 16])
    args.warmup = args.warmup if args.warmup is not None else (5 if cuda else 2)
    args.per_image_images = args.per_image_images or (8 if cuda else 4)
    if args.warmup < 1 or args.iterations < 1:
        raise SystemExit("error: --warmup and --iterations must be >= 1")
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    torch.manual_seed(0)
    bf16_ok = native_bf16(device)
    peaks = peak_rates(device, bf16_ok)
    print(f"native bf16: {bf16_ok}; measured matmul: bf16 {peaks['bf16']:.3f} TFLOP/s, fp32 {peaks['fp32']:.3f} TFLOP/s")
    images, _, source = load_images(max(max(args.batch_size), args.per_image_images), root=args.data)
    print(f"images: {source}")
    rows = []
    for spec in args.models:
        rows += benchmark_model(spec, device, images, args, peaks, bf16_ok)
        results.write(rows)  # a run cut short keeps the models it finished
    out = results.write(rows)
    print()
    print(table(rows, ["model", "mode", "batch", "precision", "img_iter_per_s", "masks_per_s_at_preset",
                       "ratio_vs_per_image", "peak_mem_per_image_mb", "achieved_tflops", "ratio_to_bf16_matmul"]))
    best: dict[str, dict] = {}
    for r in rows:
        if r["mode"] == "batched" and r["ratio_vs_per_image"] > best.get(r["model"], {}).get("ratio_vs_per_image", 0):
            best[r["model"]] = r
    for model, r in best.items():
        print(f"best for {model}: batch {r['batch']} {r['precision']}, x{r['ratio_vs_per_image']:.2f} the per-image "
              f"rate ({r['img_iter_per_s']:.2f} vs {r['img_iter_per_s'] / r['ratio_vs_per_image']:.2f} img-iter/s)")
    print(f"wrote {out}")
    figure = roofline_figure([{**results.context, **r} for r in rows], results.path("roofline", ".png"))
    if figure:
        print(f"wrote {figure}")
    synchronize(device)
    return 0
