"""The dataset run end to end: labels, resume, SIGKILL, refusal of another configuration."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.store import MaskStore, parts_dir
from tests.helpers.rows import committed_rows

runner = CliRunner()


def test_masks_run_labels_and_skips(imagenet_folder, tmp_path):
    out = tmp_path / "m.h5"
    args = ["masks", str(imagenet_folder), "--out", str(out), "-n", "2", "-b", "3", "--workers", "0", "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "skipped: 1" in result.output
    with MaskStore(out) as store:
        table = store.table().set_index("path")
        assert store.masks().shape == (7, 1, 28, 28)
    # Labels come from the 1000-wnid list, not from the order of the three folders present.
    assert table.loc["n01440764/astronaut.jpg", "label"] == 0
    assert table.loc["n01443537/colorwheel.jpg", "label"] == 1
    assert table.loc["n02124075/chelsea.jpg", "label"] == 285
    assert table.loc["n02124075/chelsea.jpg", "target"] == 285  # top-1 is the cat
    assert table.loc["n02124075/broken.jpg", "status"] == "skipped"
    assert table.loc["n02124075/broken.jpg", "reason"] != ""
    # Re-running the same command solves nothing more.
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "0 solved now, 7 already done" in again.output
    # Another configuration on the same file is refused, with the way out.
    other = runner.invoke(app, args + ["--set", "tv_coeff=0.5"])
    assert other.exit_code == 1 and "--overwrite" in other.output
    inspected = runner.invoke(app, ["inspect", str(out)])
    assert inspected.exit_code == 0 and "6 ok, 1 skipped" in inspected.output
    exported = runner.invoke(app, ["export", str(out), "--out", str(tmp_path / "pics"), "--limit", "2"])
    assert exported.exit_code == 0
    assert len(list((tmp_path / "pics").glob("*_overlay.png"))) == 2
    with MaskStore(out) as store:
        row = store.row_of_path("n02124075/chelsea.jpg")
    one = runner.invoke(app, ["export", str(out), "--out", str(tmp_path / "cat"), "--row", str(row)])
    assert one.exit_code == 0
    overlay = Image.open(tmp_path / "cat" / "n02124075__chelsea_overlay.png")
    assert overlay.size == (160, 120)  # the original frame


def test_target_label_explains_the_folder_class(imagenet_folder, tmp_path):
    out = tmp_path / "label.h5"
    result = runner.invoke(app, ["masks", str(imagenet_folder), "--out", str(out), "-n", "1", "--workers", "0",
                                 "--target", "label", "--limit", "3"])
    assert result.exit_code == 0, result.output
    with MaskStore(out) as store:
        table = store.table()
    assert (table["target"] == table["label"]).all()


def test_ctrl_c_keeps_finished_batches_and_says_how_to_resume(imagenet_folder, tmp_path, monkeypatch):
    import pipeline.jobs.run as run_module

    solve, calls = run_module._solve_batch, []

    def interrupted_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return solve(*args, **kwargs)

    monkeypatch.setattr(run_module, "_solve_batch", interrupted_second_batch)
    out = tmp_path / "m.h5"
    args = ["masks", str(imagenet_folder), "--out", str(out), "-n", "1", "-b", "3", "--workers", "0", "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 130 and "interrupted" in result.output and "resumes" in result.output
    assert not parts_dir(out).exists() and not out.with_name("m.h5.lock").exists()  # folded, unlocked
    with MaskStore(out) as store:
        assert len(store) == 3 and store.pending_parts == 0
    monkeypatch.undo()
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "3 solved now, 3 already done" in again.output  # + 1 unreadable


def test_sigterm_stops_a_run_like_ctrl_c(imagenet_folder, tmp_path):
    """SIGTERM to the whole process group, as ``timeout`` and Slurm's preemption send it: the loader's
    workers ignore it and the run ends as Ctrl-C ends it (no "DataLoader worker ... killed" traceback)."""
    out = tmp_path / "term.h5"
    command = [sys.executable, "-m", "pipeline", "masks", str(imagenet_folder), "--out", str(out),
               "-n", "15", "-b", "2", "--workers", "2", "--device", "cpu"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    deadline = time.time() + 240
    while committed_rows(out) < 2 and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert process.poll() is None, "the run ended before it was signalled"
    os.killpg(process.pid, signal.SIGTERM)  # what a scheduler sends before it kills
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert lines[-1] == "interrupted: mask stores keep every finished batch; the same command resumes them", stderr
    assert "Traceback" not in stderr and "Error" not in stderr, stderr
    assert not parts_dir(out).exists() and not out.with_name("term.h5.lock").exists()
    with MaskStore(out) as store:
        assert 2 <= len(store) < 7 and store.pending_parts == 0


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_loses_nothing(imagenet_folder, tmp_path):
    out = tmp_path / "killed.h5"
    command = [sys.executable, "-m", "pipeline", "masks", str(imagenet_folder), "--out", str(out),
               "-n", "15", "-b", "2", "--workers", "0", "--device", "cpu"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while committed_rows(out) < 2 and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)  # now inside the next batch's solve
    process.send_signal(signal.SIGKILL)
    process.wait()
    with MaskStore(out) as store:  # the killed store opens and reads: its file and its parts
        before = store.table()
        masks_before = store.masks().numpy()
        assert store.pending_parts >= 1
    assert 2 <= len(before) < 7
    inspected = CliRunner().invoke(app, ["inspect", str(out)])
    assert f"images     {len(before)} (" in inspected.output and "unfolded" in inspected.output
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    with MaskStore(out) as store:
        after = store.table()
        masks_after = store.masks().numpy()
        assert store.pending_parts == 0 and not parts_dir(out).exists()  # folded at the end
    assert sorted(after["index"]) == list(range(7))  # every image exactly once
    np.testing.assert_array_equal(masks_after[: len(before)], masks_before)  # earlier rows untouched
    assert after["path"][: len(before)].tolist() == before["path"].tolist()


def test_out_of_memory_halves_the_batch(classifier, monkeypatch):
    """A batch that does not fit is solved in halves, with the same per-image results."""
    import torch

    import pipeline.jobs.run as run_module
    from pipeline.config import override, preset

    images = torch.rand(4, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    config = override(preset("blur"), ["optim.iterations=2"])
    seeds = torch.arange(4)
    whole = run_module.solve(classifier, images, config, seeds=seeds)
    real_solve = run_module.solve

    def small_device(classifier, images, config, **kwargs):
        if len(images) > 1:
            raise torch.OutOfMemoryError("pretend the device is full")
        return real_solve(classifier, images, config, **kwargs)

    monkeypatch.setattr(run_module, "solve", small_device)
    halves = run_module._solve_fitting(classifier, images, config, None, seeds)
    torch.testing.assert_close(halves.masks, whole.masks, atol=2e-3, rtol=0)
    torch.testing.assert_close(halves.p_final, whole.p_final, atol=2e-3, rtol=0)


def test_early_stopping_run_streams_images_through_refilled_slots(imagenet_folder, tmp_path):
    # 6 readable images and a broken one through 2 slots: images leave as they stop and the next
    # ones take their place, finishing out of order; every image is stored once, with its count.
    from pipeline.config import override, preset, to_dict

    out = tmp_path / "stop.h5"
    args = ["masks", str(imagenet_folder), "--out", str(out), "--preset", "blur", "-n", "30", "-b", "2",
            "--workers", "0", "--device", "cpu", "--set", "optim.stop_window=5", "--set", "optim.stop_tol=0.05",
            "--target", "label"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "6 solved now" in result.output and "skipped: 1" in result.output
    with MaskStore(out) as store:
        table = store.table()
        masks = store.masks()
        assert store.config["solver"]["optim"]["stop_window"] == 5
    assert sorted(table["index"]) == list(range(7))
    ok = (table.status == "ok").to_numpy()
    used = table.loc[ok, "iterations"]
    assert used.isin([10, 15, 20, 25, 30]).all() and used.nunique() > 1, used.tolist()
    ok_rows = torch.as_tensor(ok.copy())
    assert torch.isfinite(masks[ok_rows]).all() and torch.isnan(masks[~ok_rows]).all()
    assert (table.loc[ok, "p_final"] < table.loc[ok, "p_original"]).all()
    assert (table.loc[ok, "target"] == table.loc[ok, "label"]).all()  # --target label, through the slots
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "0 solved now, 7 already done" in again.output
    # Without early stopping the recorded configuration has no stop fields, as before they existed.
    assert "stop_window" not in to_dict(preset("paper"))["optim"]
    assert to_dict(override(preset("paper"), ["optim.stop_window=20"]))["optim"]["stop_tol"] == 0.01


def test_streamed_run_out_of_memory_stops_cleanly_and_keeps_what_finished(imagenet_folder, tmp_path, monkeypatch):
    import pipeline.solve.stream as stream_module

    real = stream_module.solve_stream

    def runs_out_after_one_result(*args, **kwargs):
        results = real(*args, **kwargs)
        yield next(results)
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(stream_module, "solve_stream", runs_out_after_one_result)
    out = tmp_path / "oom.h5"
    args = ["masks", str(imagenet_folder), "--out", str(out), "--preset", "blur", "-n", "10", "-b", "2",
            "--workers", "0", "--device", "cpu", "--set", "optim.stop_window=5", "--set", "optim.stop_tol=100"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "ran out of memory with 2 slots" in result.output, result.output
    assert "Traceback" not in result.output
    with MaskStore(out) as store:
        table = store.table()
    assert len(table) >= 2 and set(table.status) <= {"ok", "skipped"}  # the first hand-out is stored
    monkeypatch.setattr(stream_module, "solve_stream", real)
    again = runner.invoke(app, args)  # and a resume finishes the rest
    assert again.exit_code == 0 and f"{len(table)} already done" in again.output, again.output


def test_batch_size_must_be_a_number_or_auto(classifier, imagenet_folder, tmp_path):
    from pipeline.config import preset
    from pipeline.jobs.run import CPU_BATCH, auto_batch_size

    assert auto_batch_size(classifier, preset("paper")) == CPU_BATCH  # on a CPU
    result = runner.invoke(app, ["masks", str(imagenet_folder), "--out", str(tmp_path / "x.h5"), "-b", "many"])
    assert result.exit_code == 1 and "--batch-size 'many'" in result.output


def test_demo_runs_the_main_job_on_shipped_pictures(tmp_path):
    # `make demo` (the README's quick start) calls this command.
    result = runner.invoke(app, ["demo", "--out", str(tmp_path), "-n", "1", "--device", "cpu", "--step", "12544"])
    assert result.exit_code == 0, result.output
    page = tmp_path / "evaluation" / "report.html"
    assert result.output.rstrip().endswith(f"open the report: {page}") and page.stat().st_size > 10_000
    with MaskStore(tmp_path / "masks.h5") as store:
        table = store.table()
    assert (table.status == "ok").sum() >= 5 and (table.status == "skipped").sum() == 1  # one corrupt file
    assert list((tmp_path / "pictures").glob("*_overlay.png"))
