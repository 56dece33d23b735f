"""The ``jacobgil`` presets against an independent rewrite of jacobgil's per-image loop
(``tests/reference/jacobgil.py``, where the loop and what it checks are described).

Run from the repository root::

    .venv/bin/python benchmarks/jacobgil_reference.py                      # 3 development images, 500 iterations
    .venv/bin/python benchmarks/jacobgil_reference.py --images 1 --iterations 5   # smoke test

It solves each image with the reference and with ``pipeline.solve.solver.solve`` (presets ``jacobgil`` and
``jacobgil-code``, same noise), and writes ``results/benchmarks/jacobgil-reference-<device>.csv``: per
image and preset the largest and mean absolute difference of the 28x28 masks, their Pearson
correlation, both final target probabilities, and the machine; and the same agreement between
two runs of the reference with different noise (``*_reference_other_noise``), the scale against
which a difference at full length is judged (Adam turns float rounding in cells whose gradient is
near zero into full-size steps, so equal algorithms drift apart over hundreds of iterations).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import _common as common
    from tests.reference.jacobgil import compare
    from pipeline.models import load_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=3, help="first N development images")
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--presets", default="jacobgil-code,jacobgil")
    parser.add_argument("--out", type=Path, default=common.RESULTS)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: least hurt by a loaded machine)")
    parser.add_argument("--no-yardstick", action="store_true", help="skip the reference run with other noise")
    args = parser.parse_args(argv)
    device = torch.device("cpu")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    classifier = load_model("efficientnet_lite0", device=device)
    images, _, source = common.load_images(args.images)
    info = common.machine(device)
    rows = []
    for index in range(len(images)):
        for name in args.presets.split(","):
            row = {"image": index, "source": source, **compare(classifier, images[index : index + 1], name,
                                                                 args.iterations, seed=index,
                                                                 yardstick=not args.no_yardstick)}
            row.update(machine=info["machine"], torch=info["torch"], date=common.now(),
                       loadavg=common.load_average())
            print(common.table([row], ["image", "preset", "iterations", "max_abs_diff", "mean_abs_diff", "pearson",
                                       "pearson_reference_other_noise"]), flush=True)
            rows.append(row)
            path = common.write_csv(args.out / f"jacobgil-reference-{device.type}.csv", rows)  # after every row
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
