"""The ``jacobgil`` and ``jacobgil-code`` presets against jacobgil's per-image loop rewritten on its own
in plain torch (``tests/reference/jacobgil.py``, the reference code the tests also use; docs/method.md).

Each image is solved by the reference and by ``pipeline.solve`` with the same noise draws, and a
second time by the reference with other noise (the yardstick: how far the script lands from
itself; ``--no-yardstick`` skips it). Per image and preset: the largest and mean absolute difference
of the 28 x 28 masks, their Pearson correlation, both mask means and final target probabilities,
and the same agreement between the two reference runs (``*_reference_other_noise``).

Files: ``STEM.csv`` (default ``jacobgil-reference-<device>.csv``), a row as each finishes.
"""

from __future__ import annotations

import torch

from benchmarks.common import add_images, load_average, load_images, table
from pipeline import load_model
from tests.reference import jacobgil as reference

NAME = "jacobgil-reference-{device}"
DEVICES = ("cpu",)
THREADS = 1
"""One torch thread: on the shared 2-core machine two threads ran an iteration 4-10x slower."""


def add_arguments(parser) -> None:
    add_images(parser, 3)
    parser.add_argument("--iterations", type=int, default=500, help="solver iterations (default 500)")
    parser.add_argument("--presets", nargs="+", default=["jacobgil-code", "jacobgil"],
                        choices=["jacobgil-code", "jacobgil"])
    parser.add_argument("--no-yardstick", action="store_true", help="skip the reference run with other noise")


def run(args, device: torch.device, results) -> int:
    torch.manual_seed(0)
    classifier = load_model("efficientnet_lite0", device=device)
    images, _, source = load_images(args.images, root=args.data)
    rows: list[dict] = []
    for index in range(len(images)):
        for name in args.presets:
            row = {"image": index, "source": source,
                   **reference.compare(classifier, images[index : index + 1], name, args.iterations, seed=index,
                                       yardstick=not args.no_yardstick),
                   "loadavg": load_average()}
            print(table([row], ["image", "preset", "iterations", "max_abs_diff", "mean_abs_diff", "pearson",
                                "pearson_reference_other_noise"]), flush=True)
            rows.append(row)
            path = results.write(rows)  # after every row
    print(f"wrote {path}")
    return 0
