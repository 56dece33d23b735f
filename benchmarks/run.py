"""Every benchmark of the project, one entry point: python benchmarks/run.py MODE [options].

python benchmarks/run.py --help lists the modes; python benchmarks/run.py MODE --help gives a
mode's options. Options every mode takes, with the same meaning everywhere:

  --device cpu|cuda  where the work runs (cuda stops at once with a clear message without a GPU)
  --threads N        torch threads (0: torch's default); the mode's default where it needs one
  --out DIR          the folder results are written to (default results/benchmarks)
  --name STEM        file names: DIR/STEM.csv and its companions DIR/STEM-<part>.csv/.png;
                     "{device}" in it becomes cpu or cuda

Modes that work on images also take --images N and --data DIR; --batch-size takes several values
where a mode sweeps it. Every CSV row records the exact command, the machine, torch, the date and
the load average (benchmarks/writer.py).
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # the working tree's pipeline/ and benchmarks/, without installing

from benchmarks.modes import MODES, module_name  # noqa: E402


def mode_list() -> str:
    width = max(map(len, MODES))
    return "modes:\n" + "\n".join(f"  {name:<{width}}  {line}" for name, line in MODES.items())


def mode_parser(mode: str, module) -> argparse.ArgumentParser:
    """The mode's own options and the common ones, with the mode's defaults."""
    from benchmarks.common import RESULTS

    parser = argparse.ArgumentParser(prog=f"benchmarks/run.py {mode}", description=module.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common = parser.add_argument_group("common options")
    common.add_argument("--device", default="cpu", choices=module.DEVICES, help="where the work runs (default cpu)")
    common.add_argument("--threads", type=int, default=module.THREADS,
                        help=f"torch threads, 0 for torch's default (default {module.THREADS})")
    out = getattr(module, "OUT", RESULTS)
    common.add_argument("--out", type=Path, default=out, help=f"results folder (default {_shown(out)})")
    common.add_argument("--name", default=module.NAME, help=f"file name stem (default {module.NAME})")
    module.add_arguments(parser.add_argument_group(f"{mode} options"))
    return parser


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    top = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__, epilog=mode_list(),
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("mode", metavar="MODE", choices=list(MODES), help="one of the modes below")
    top.parse_args(argv[:1])  # --help lists the modes; no mode or an unknown one is an error
    mode = argv[0]
    module = importlib.import_module(module_name(mode))
    args = mode_parser(mode, module).parse_args(argv[1:])

    import torch

    from benchmarks.common import pick_device
    from benchmarks.writer import Results

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    results = Results(args.out, args.name, device, shlex.join(["python", "benchmarks/run.py", *argv]))
    print(f"{mode}: {results.info['machine']}; torch {results.info['torch']}; "
          f"load average {results.context['loadavg_start']} (1/5/15 min)", flush=True)
    return int(module.run(args, device, results) or 0)


if __name__ == "__main__":
    sys.exit(main())
