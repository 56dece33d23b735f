"""Damaged stores: each opens with a one-line error that says what is wrong and what to do, or reads
correctly; `perturb repair` keeps every row that still reads. Nothing is silently wrong."""

import errno
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

import pipeline.store.files
import pipeline.store.writer
from pipeline.cli import app
from pipeline.errors import StoreError
from pipeline.store.repair import repair_store
from pipeline.store import MaskStore, parts_dir, summary
from tests.helpers.rows import batch, killed, mask_of, open_writer, write

ROOT = Path(__file__).resolve().parents[2]

runner = CliRunner()


def committed(path) -> dict[int, np.ndarray]:
    """``index -> mask`` of every row a reader sees; each must hold its own mask, once."""
    with MaskStore(path) as store:
        index, masks = store.column("index"), store.masks().numpy()
    assert len(set(index.tolist())) == len(index), "an index appears twice"
    for i, mask in zip(index.tolist(), masks):
        assert np.array_equal(mask, mask_of(i).astype(np.float16).astype(np.float32)), f"row {i} is wrong"
    return dict(zip(index.tolist(), masks))


def test_truncated_file_is_refused_in_one_line_not_called_locked(tmp_path):
    path = tmp_path / "masks.h5"
    write(path, [batch(list(range(40)))])
    data = path.read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 100):
        path.write_bytes(data[:cut])
        for open_it in (lambda: MaskStore(path), lambda: open_writer(path)):
            with pytest.raises(StoreError, match="shorter than HDF5 recorded.*copy it again") as caught:
                open_it()
            assert "locked" not in str(caught.value) and "\n" not in str(caught.value)
        with pytest.raises(StoreError, match="cannot be repaired: it was cut short"):
            repair_store(path)
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 1 and result.output.startswith("error: mask store")
    assert result.output.count("\n") == 1


def test_garbage_part_is_named_and_repair_keeps_every_other_row(tmp_path):
    path = tmp_path / "masks.h5"
    write(path, [batch([0, 1])])
    killed(path, [batch([2, 3]), batch([4]), batch([5, 6])])
    (parts_dir(path) / "000000003.h5").write_bytes(os.urandom(800))  # batch [4] (part 1 was folded)
    for open_it in (lambda: MaskStore(path), lambda: open_writer(path)):
        with pytest.raises(StoreError, match=r"batch file .*000000003\.h5.* is damaged.*perturb repair"):
            open_it()
    result = runner.invoke(app, ["repair", str(path)])
    assert result.exit_code == 0, result.output
    assert "kept 6 rows" in result.output and "set aside 1" in result.output
    assert sorted(committed(path)) == [0, 1, 2, 3, 5, 6]
    assert (path.parent / "masks.h5.damaged-1" / "masks.h5.parts" / "000000003.h5").is_file()
    write(path, [batch([4])])  # the run resumes the repaired store and solves the lost image
    assert sorted(committed(path)) == list(range(7))


def test_damaged_chunk_is_reported_and_repair_keeps_the_rows_that_read(tmp_path):
    path = tmp_path / "masks.h5"
    write(path, [batch(list(range(20)))])
    with h5py.File(path) as file:
        chunk = file["mask"].id.get_chunk_info(7)  # the mask of row 7
    with open(path, "r+b") as handle:
        handle.seek(chunk.byte_offset)
        handle.write(bytes(chunk.size))
    with MaskStore(path) as store:
        assert len(store.column("index")) == 20  # the scalar columns still read
        with pytest.raises(StoreError, match="is damaged.*perturb repair"):
            store.masks()
    report = repair_store(path)
    assert report.rows_from_file == 19 and report.rows_before == 20
    assert sorted(committed(path)) == [i for i in range(20) if i != 7]


def test_rows_attribute_past_the_data_is_refused_not_read_short(tmp_path):
    path = tmp_path / "masks.h5"
    write(path, [batch([0, 1, 2])])
    with h5py.File(path, "r+") as file:
        file.attrs["rows"] = 5
    with pytest.raises(StoreError, match="5 rows are committed but datasets hold fewer.*perturb repair"):
        MaskStore(path)
    assert repair_store(path).rows_from_file == 3
    assert sorted(committed(path)) == [0, 1, 2]


@pytest.mark.parametrize("step", ["copy", "append", "rename", "delete"])
def test_fold_interrupted_at_each_step_loses_and_repeats_nothing(tmp_path, monkeypatch, step):
    path = tmp_path / "masks.h5"
    write(path, [batch([0, 1])])
    real_replace, real_unlink = os.replace, Path.unlink

    def stop_copy(source, target, *args, **kwargs):  # half of the copy written, then stopped
        Path(target).write_bytes(Path(source).read_bytes()[: os.path.getsize(source) // 2])
        raise KeyboardInterrupt

    def stop_append(*args, **kwargs):
        raise KeyboardInterrupt

    def stop_rename(source, target):
        if Path(target) == path:
            raise KeyboardInterrupt
        return real_replace(source, target)

    def stop_delete(self, *args, **kwargs):  # after the first part is deleted
        if self.parent == parts_dir(path) and self.name == "000000003.h5":
            raise KeyboardInterrupt
        return real_unlink(self, *args, **kwargs)

    patches = {"copy": (pipeline.store.writer.shutil, "copyfile", stop_copy),
               "append": (pipeline.store.writer, "_append_columns", stop_append),
               "rename": (pipeline.store.writer.os, "replace", stop_rename),
               "delete": (Path, "unlink", stop_delete)}
    w = open_writer(path, merge_every=3)
    w.append(*batch([2]))
    w.append(*batch([3, 4]))
    monkeypatch.setattr(*patches[step])
    with pytest.raises(KeyboardInterrupt):
        with w:
            w.append(*batch([5]))  # the third part: the fold starts, and is interrupted
    monkeypatch.undo()
    assert sorted(committed(path)) == list(range(6))
    write(path, [batch([6])])  # resumes: folds what is waiting, adds a batch
    assert sorted(committed(path)) == list(range(7))
    assert not parts_dir(path).exists() and not path.with_name("masks.h5.tmp").exists()


def test_store_copied_while_being_written(tmp_path):
    path = tmp_path / "run" / "masks.h5"
    w = open_writer(path, merge_every=2)
    w.append(*batch([0, 1]))
    early = tmp_path / "early.h5"
    shutil.copyfile(path, early)  # the file alone, copied before a fold: an earlier, whole state
    w.append(*batch([2]))  # folds parts 1 and 2
    w.append(*batch([3]))  # part 3
    shutil.copytree(parts_dir(path), parts_dir(early))  # its parts folder, copied later
    only_file = tmp_path / "only_file.h5"
    shutil.copyfile(path, only_file)
    w.close()
    with MaskStore(only_file) as store:  # reads correctly: the rows of its last fold
        assert sorted(store.column("index").tolist()) == [0, 1, 2]
    with pytest.raises(StoreError, match=r"does not match its batch folder.*lacks batch\(es\) \[1, 2\]"):
        MaskStore(early)  # else it would silently lack rows 0..2
    with pytest.raises(StoreError, match="does not match its batch folder"):
        open_writer(early)
    assert repair_store(early).rows == 1
    assert sorted(committed(early)) == [3]


def test_read_only_store_reads_and_refuses_writing_in_one_line(tmp_path, monkeypatch):
    path = tmp_path / "masks.h5"
    write(path, [batch([0, 1])])
    killed(path, [batch([2])])
    for entry in (path, *parts_dir(path).iterdir(), parts_dir(path), tmp_path):
        entry.chmod(0o555 if entry.is_dir() else 0o444)
    try:
        # Root ignores these modes, so the refusal of a read-only file system is simulated too.
        real_open = os.open

        def read_only(file, flags, *args, **kwargs):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                raise OSError(errno.EROFS, "Read-only file system", file)
            return real_open(file, flags, *args, **kwargs)

        monkeypatch.setattr(pipeline.store.files.os, "open", read_only)
        assert sorted(committed(path)) == [0, 1, 2]
        assert summary(path)["done"] == 3
        with pytest.raises(StoreError, match="cannot be written here.*Read-only file system.*can still be read"):
            open_writer(path)
    finally:
        for entry in (tmp_path, parts_dir(path), *parts_dir(path).iterdir(), path):
            entry.chmod(0o755 if entry.is_dir() else 0o644)


WRITER = """
import sys
sys.path.insert(0, sys.argv[1])
from pipeline.store import MaskWriter  # numpy and h5py only: starts in a fraction of a second
from tests.helpers.rows import CONFIG, batch

with MaskWriter(sys.argv[2], CONFIG, "tf_efficientnet_lite0", "/data/val", merge_every=3) as writer:
    print("ready", flush=True)
    for start in range(0, 45, 3):
        writer.append(*batch(list(range(start, start + 3))))
"""


def test_readers_see_a_consistent_snapshot_while_a_writer_folds(tmp_path):
    path = tmp_path / "masks.h5"
    write(path, [batch([1000])])
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(ROOT), str(path)], stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout.readline().strip() == "ready"
    seen, reads = 0, 0
    while process.poll() is None or reads < 3:
        rows = committed(path)  # every row once, each with its own mask
        assert len(rows) >= seen and 1000 in rows  # never goes back
        done = sorted(i for i in rows if i < 1000)
        assert done == list(range(len(done)))  # batches in order: no batch missing in between
        assert summary(path)["done"] >= len(rows)  # what inspect prints, opened after
        seen, reads = len(rows), reads + 1
        time.sleep(0.01)
    assert process.wait() == 0 and reads >= 3
    inspected = runner.invoke(app, ["inspect", str(path)])
    assert inspected.exit_code == 0 and "46 (46 ok, 0 skipped)" in inspected.output


def test_a_part_folded_away_while_it_is_opened_is_retried_not_called_damaged(tmp_path, monkeypatch):
    # HDF5 reports a file deleted between the reader's listing and its open as a failed stat
    # (OSError), not as a missing file; the reader must retry on the folded store.
    path = tmp_path / "masks.h5"
    killed(path, [batch([0, 1]), batch([2, 3])])
    real_open, raced = h5py.File, []

    def fold_then_open(name, *args, **kwargs):
        if Path(name).parent == parts_dir(path) and not raced:
            raced.append(name)
            with open_writer(path):  # a writer folds the parts into the store meanwhile
                pass
            raise OSError("Unable to synchronously open file (can't retrieve stat info for file)")
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(h5py, "File", fold_then_open)
    rows = committed(path)
    assert raced and sorted(rows) == [0, 1, 2, 3]


def test_repair_of_a_healthy_store_changes_nothing(tmp_path):
    path = tmp_path / "masks.h5"
    killed(path, [batch([0, 1]), batch([2])])  # whole file plus unfolded batches: healthy
    before = committed(path)
    files = sorted(p.name for p in tmp_path.rglob("*"))
    result = runner.invoke(app, ["repair", str(path)])
    assert result.exit_code == 0, result.output
    assert "healthy" in result.output and "nothing changed" in result.output
    assert "damaged" not in result.output
    assert sorted(p.name for p in tmp_path.rglob("*")) == files  # no backup folder, no copy
    assert sorted(committed(path)) == sorted(before)
