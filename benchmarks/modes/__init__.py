"""The benchmark modes: one module per mode, each with ``NAME`` (the default ``--name``), ``DEVICES``,
``THREADS`` (the default ``--threads``; 0 is torch's own), optionally ``OUT`` (the default ``--out``),
``add_arguments(parser)`` and ``run(args, device, results) -> exit status``.

:data:`MODES` is the list ``benchmarks/run.py --help`` prints, without importing any mode.
"""

MODES: dict[str, str] = {
    "solver": "solver throughput: the per-image loop against the batched solver, FLOPs, the roofline",
    "quality": "mask quality of fast variants (bf16, compiled, folded, early stopping) against fp32",
    "metrics": "deletion/insertion throughput: batched causal_curves against RISE's one-image loop",
    "iterations": "mask quality against iterations: presets or variants cut at counts, against a reference",
    "dataset-time": "wall time of run_masks (perturb masks) on the same images, variant against variant",
    "scaling": "the whole job against the solver, 1 process against torchrun shards, the merge",
    "store-append": "what crash safety costs the mask store: committed parts against appending in place",
    "store-compression": "bytes per mask and write time of each HDF5 filter for the store's masks",
    "kill-store": "kill a store writer at random moments, many times; count stores that lost rows",
    "soak": "resident memory of a long perturb masks run, recorded after every batch",
    "fuzz": "perturb masks over 1,000+ damaged image files and odd folder entries",
    "report-size": "page size and write time of a report for a large run against the development run",
    "peers": "the extremal preset against TorchRay's extremal_perturbation (run, judge, speed)",
    "jacobgil": "the jacobgil presets against jacobgil's per-image loop rewritten in plain torch",
    "metric-parity": "deletion/insertion against Quantus, the pointing game against TorchRay",
    "methods": "images/s of each saliency method batched against a per-image loop; RISE against TorchRay's",
    "road": "ROAD's imputation: the batched linear solver against the reference's per-image spsolve",
    "amortise": "amortised masks: a mask predictor trained on sample images, then refinement, against paper(-fast)",
    "allocator": "a CPU solve with glibc's default allocator against keeping freed memory (what perturb sets)",
    "first-hour": "seconds to an error on a bad path, a complete store's re-run, the first batch (from start and from the model loaded): against another checkout",
}
"""Mode name -> one line of what it measures."""


def module_name(mode: str) -> str:
    """The module of a mode: ``dataset-time`` -> ``benchmarks.modes.dataset_time``."""
    return "benchmarks.modes." + mode.replace("-", "_")
