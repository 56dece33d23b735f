"""Sharded runs: torchrun (real, 2 CPU workers), a killed rank restarted, --shard by hand, Slurm
variables, merging, refusals of shards that do not belong together, sharded evaluation."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.distributed import Shard, resolve_shard
from pipeline.errors import ConfigError
from pipeline.jobs.shards import MaskShard, read_plan, shards_dir
from pipeline.store import MaskStore
from tests.helpers.cli import SOLVE
from tests.helpers.models import torch_threads
from tests.helpers.rows import committed_rows

runner = CliRunner()


@pytest.fixture(scope="module")
def reference(solved_store):
    """The one-process store the sharded runs must equal (table, masks, configuration, path)."""
    with MaskStore(solved_store) as store:
        return store.table(), store.masks().numpy(), store.config, store.path


def _assert_same_store(path, reference):
    """Same table, masks and configuration, bit for bit: on the CPU every batch is solved at the
    full batch size (pipeline.jobs.run.CPU_PADDING), whichever images share it."""
    table, masks, config, _ = reference
    with MaskStore(path) as store:
        pd.testing.assert_frame_equal(store.table(), table)  # same rows, same order, same values
        np.testing.assert_array_equal(store.masks().numpy(), masks)  # NaN where skipped, in both
        assert store.config == config and store.shard == ""


def _worker_env():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parents[2]), env.get("PYTHONPATH")]))
    return env


def _torchrun(folder, out, *extra):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *extra,
            "-m", "pipeline", "masks", str(folder), "--out", str(out), *SOLVE]


# --------------------------------------------------------------------------------------------
# where the shard comes from


def test_shard_comes_from_the_option_then_torchrun_then_slurm():
    torchrun = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "h"}
    array = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "2"}
    srun = {"SLURM_PROCID": "2", "SLURM_NTASKS": "4", "SLURM_LOCALID": "0", "SLURM_STEP_ID": "0"}
    assert resolve_shard("1/4", torchrun) == Shard(1, 4, None, "--shard")
    assert resolve_shard(None, {**torchrun, **array, **srun}) == Shard(3, 8, 1, "torchrun")
    assert resolve_shard(None, {**array, **srun}) == Shard(3, 4, None, "slurm-array")  # 5 - min 2
    assert resolve_shard(None, srun) == Shard(2, 4, 0, "srun")
    batch_shell = {k: v for k, v in srun.items() if k != "SLURM_STEP_ID"}  # sbatch's own shell
    assert not resolve_shard(None, batch_shell).sharded
    assert resolve_shard(None, {}) == Shard()
    assert list(Shard(1, 3).indices(8)) == [1, 4, 7]
    assert Shard(1, 4, 1, "torchrun").device("cpu") == "cpu"
    for bad in ("4/4", "1of4", "-1/2"):
        with pytest.raises(ConfigError, match="--shard"):
            resolve_shard(bad, {})
    with pytest.raises(ConfigError, match="array task 9"):
        resolve_shard(None, {"SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_COUNT": "4"})


# --------------------------------------------------------------------------------------------
# by hand and with Slurm's variables


@pytest.fixture(scope="module")
def half_run(imagenet_folder, tmp_path_factory):
    """Shard 0 of 2 of a run done with --shard by hand; shard 1 not started."""
    out = tmp_path_factory.mktemp("hand") / "s.h5"
    with torch_threads(1):
        result = runner.invoke(app, ["masks", str(imagenet_folder), "--out", str(out), "--shard", "0/2", *SOLVE])
    assert result.exit_code == 0, result.output
    assert "waiting for shards 1 of 2" in result.output
    return out


def _one_error_line(result):
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_shards_that_do_not_belong_to_the_run_are_refused(imagenet_folder, half_run):
    args = ["masks", str(imagenet_folder), "--out", str(half_run), *SOLVE]
    line = _one_error_line(runner.invoke(app, [*args, "--shard", "1/3"]))
    assert "split into 2 shards" in line and "shard 1/3" in line
    line = _one_error_line(runner.invoke(app, [*args, "--shard", "1/2", "--set", "tv_coeff=0.5"]))
    assert "configuration differs" in line and "tv_coeff" in line
    line = _one_error_line(runner.invoke(app, [*args, "--shard", "1/2", "--limit", "4"]))
    assert "lists 4 images" in line and "started on 7" in line
    line = _one_error_line(runner.invoke(app, ["merge", str(half_run)]))
    assert "1 of 2 shards are not complete" in line and "shard 1: missing" in line
    assert not half_run.exists() and read_plan(half_run).world == 2  # nothing was written


def test_shard_by_hand_and_slurm_array_task_then_merge(imagenet_folder, half_run, reference, monkeypatch, one_thread):
    inspected = runner.invoke(app, ["inspect", str(half_run)])
    assert inspected.exit_code == 0, inspected.output
    assert "4 of 4      complete" in inspected.output and "0 of 3      missing" in inspected.output
    # Shard 1 as the second task of a Slurm job array numbered from 1 (--array=1-2).
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
    result = runner.invoke(app, ["masks", str(imagenet_folder), "--out", str(half_run), *SOLVE])
    assert result.exit_code == 0, result.output
    assert "3 solved now" in result.output and "perturb merge" in result.output
    with MaskStore(MaskShard.shard_path(half_run, 1, 2)) as store:
        assert sorted(store.column("index")) == [1, 3, 5]  # index % 2 == 1
    merged = runner.invoke(app, ["merge", str(half_run)])
    assert merged.exit_code == 0, merged.output
    _assert_same_store(half_run, reference)
    assert not shards_dir(half_run).exists()
    again = runner.invoke(app, ["masks", str(imagenet_folder), "--out", str(half_run), *SOLVE])
    assert again.exit_code == 0 and "already merged" in again.output


# --------------------------------------------------------------------------------------------
# torchrun


def _children(pid):
    """Processes whose parent is ``pid`` (from /proc/<p>/stat: the field after the command)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _worker_pid(agent, rank):
    for child in _children(agent):
        try:
            environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ and b"TORCHELASTIC_RESTART_COUNT=0" in environ:
            return child
    return None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="finds the worker through /proc")
def test_torchrun_with_a_killed_rank_equals_one_process(imagenet_folder, reference, tmp_path):
    # A real `torchrun --nproc-per-node 2 --max-restarts 1`: rank 1 is killed with SIGKILL after its
    # first batch, torchrun restarts both workers, each resumes its shard, rank 0 merges; the merged
    # store equals the one-process run row for row, masks bit for bit.
    out = tmp_path / "k.h5"
    process = subprocess.Popen(_torchrun(imagenet_folder, out, "--max-restarts", "1"), env=_worker_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline, killed = time.time() + 300, None
    shard = MaskShard.shard_path(out, 1, 2)
    while killed is None and time.time() < deadline and process.poll() is None:
        worker = _worker_pid(process.pid, 1)
        if worker is not None and committed_rows(shard) >= 1:  # shard 1 has committed a batch, solves the next
            os.kill(worker, signal.SIGKILL)
            killed = worker
        time.sleep(0.1)
    output, _ = process.communicate(timeout=600)
    assert killed is not None, output[-3000:]
    assert process.returncode == 0, output[-3000:]
    assert "merged 2 shards" in output
    assert re.search(r"k\.shard-1-of-2\.h5: 3 images; [0-2] solved now, [1-3] already done", output), output[-3000:]
    _assert_same_store(out, reference)  # every image once, in one-process order, the same masks
    assert not shards_dir(out).exists()


# --------------------------------------------------------------------------------------------
# evaluation


def test_sharded_evaluation_merges_into_the_one_process_report(reference, tmp_path, one_thread):
    store = str(reference[3])
    settings = ["--step", "16724", "-b", "2", "--workers", "0", "--device", "cpu"]
    one = runner.invoke(app, ["evaluate", store, "--out", str(tmp_path / "one"), *settings])
    assert one.exit_code == 0, one.output
    report = tmp_path / "sharded"
    first = runner.invoke(app, ["evaluate", store, "--out", str(report), "--shard", "0/2", *settings])
    assert first.exit_code == 0 and "waiting for shards 1" in first.output, first.output
    line = _one_error_line(runner.invoke(app, ["merge", str(report)]))
    assert "shards 1 of 2 are not evaluated" in line
    other_step = ["--step", "8000", *settings[2:]]
    line = _one_error_line(runner.invoke(app, ["evaluate", store, "--out", str(report), "--shard", "1/2",
                                               *other_step]))
    assert "evaluation settings differs" in line
    second = runner.invoke(app, ["evaluate", store, "--out", str(report), "--shard", "1/2", *settings])
    assert second.exit_code == 0 and "perturb merge" in second.output, second.output
    merged = runner.invoke(app, ["merge", str(report)])
    assert merged.exit_code == 0, merged.output
    pd.testing.assert_frame_equal(pd.read_parquet(report / "per_image.parquet"),
                                  pd.read_parquet(tmp_path / "one" / "per_image.parquet"))
    with np.load(report / "curves.npz") as got, np.load(tmp_path / "one" / "curves.npz") as want:
        assert sorted(got.files) == sorted(want.files)
        for name in want.files:
            np.testing.assert_array_equal(got[name], want[name])
    assert (report / "summary.json").read_text() == (tmp_path / "one" / "summary.json").read_text()
    assert sorted(p.name for p in report.iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    assert not shards_dir(report).exists()


def test_slurm_scripts_chain_the_merge_after_the_array():
    folder = Path(__file__).parents[2] / "scripts" / "slurm"
    for script in sorted(folder.iterdir()):
        checked = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert checked.returncode == 0, (script.name, checked.stderr)
    submit = (folder / "submit.sh").read_text()
    assert '--dependency="afterok:$array"' in submit and "merge.sbatch" in submit
    assert "$PERTURB merge" in (folder / "merge.sbatch").read_text()
