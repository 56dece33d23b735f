"""The benchmark harness (``benchmarks/run.py``): every mode is listed and loads, and results carry
the exact command and the machine. Run as commands, the way a user runs them.
"""

import csv
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN = [sys.executable, str(ROOT / "benchmarks" / "run.py")]


def _modes() -> list[str]:
    """The registry's mode names, read by the harness itself in a child process."""
    code = "from benchmarks.modes import MODES; print(' '.join(MODES))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_help_lists_every_mode_with_one_line():
    done = subprocess.run([*RUN, "--help"], capture_output=True, text=True, check=True)
    listing = done.stdout.split("modes:\n", 1)[1].splitlines()
    assert [line.split()[0] for line in listing] == _modes()
    assert all(len(line.split(None, 1)) == 2 for line in listing)  # a name and its line


def test_every_mode_module_is_a_listed_mode():
    modules = sorted(p.stem.replace("_", "-") for p in (ROOT / "benchmarks" / "modes").glob("*.py")
                     if p.stem != "__init__")
    assert modules == sorted(_modes())


def test_every_mode_loads_and_takes_the_common_options():
    code = ("import importlib\n"
            "from benchmarks.modes import MODES, module_name\n"
            "from benchmarks.run import mode_parser\n"
            "for mode in MODES:\n"
            "    text = mode_parser(mode, importlib.import_module(module_name(mode))).format_help()\n"
            "    assert all(o in text for o in ('--device', '--threads', '--out', '--name')), mode\n"
            "print('loaded', len(MODES))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == f"loaded {len(_modes())}"


def test_unknown_mode_and_missing_gpu_are_one_line_errors():
    done = subprocess.run([*RUN, "no-such-mode"], capture_output=True, text=True)
    assert done.returncode == 2 and "invalid choice: 'no-such-mode'" in done.stderr
    done = subprocess.run([*RUN, "store-append", "--device", "cuda"], capture_output=True, text=True)
    assert done.returncode == 2 and "invalid choice: 'cuda'" in done.stderr  # a CPU-only mode


def test_a_mode_writes_its_rows_with_the_command_and_the_machine(tmp_path):
    args = ["store-append", "--batches", "2", "--batch-size", "2", "1", "--out", str(tmp_path), "--name", "s-{device}"]
    done = subprocess.run([*RUN, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    with open(tmp_path / "s-cpu.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["writer"], r["rows_per_batch"]) for r in rows] == [("in-place", "2"), ("parts", "2"),
                                                                  ("in-place", "1"), ("parts", "1")]
    assert {r["command"] for r in rows} == {shlex.join(["python", "benchmarks/run.py", *args])}
    assert all(r["machine"] and r["torch"] and r["loadavg_start"] for r in rows)
    assert [float(r["ratio_vs_in_place"]) for r in rows if r["writer"] == "in-place"] == [1.0, 1.0]
