"""The HDF5 mask store (pipeline.store): round trip, resume, refusal, crash safety, shards."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.errors import ConfigError, StoreError
from pipeline.solve.masks import resize
from pipeline.store import (
    COLUMNS,
    MaskStore,
    MaskWriter,
    merge_shards,
    parts_dir,
    run_key,
    shard_path,
    summary,
)
from tests.helpers.rows import CONFIG, SHAPE, batch, killed, mask_of, write

ROOT = Path(__file__).resolve().parents[2]


def test_round_trip_of_three_batches(tmp_path):
    path = tmp_path / "out" / "masks.h5"
    batches = [batch([0, 1, 2, 3], skipped={2}), batch([4, 5, 6, 7]), batch([9, 8])]
    rows, masks = batches[1]
    write(path, [batches[0], (rows, torch.from_numpy(masks)), batches[2]])  # tensors work too

    with MaskStore(path) as store:
        assert len(store) == 10
        table = store.table()
        assert list(table.columns) == [*COLUMNS, "area"]
        assert table["index"].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 9, 8]  # commit order
        for name in COLUMNS:
            expected = np.concatenate([np.asarray(rows[name]) for rows, _ in batches])
            if name in ("path", "status", "reason"):
                assert table[name].tolist() == expected.tolist()
            else:
                stored = expected.astype(COLUMNS[name])
                np.testing.assert_array_equal(table[name].to_numpy(), stored)
        assert table["height"].dtype == np.int32 and table["index"].dtype == np.int64
        np.testing.assert_allclose(table["area"], table["index"] / 1000, rtol=1e-6)

        masks = store.masks()
        assert masks.shape == (10, *SHAPE) and masks.dtype == torch.float32
        for row, index in enumerate(table["index"]):
            if index == 2:
                assert torch.isnan(masks[row]).all()  # skipped rows hold NaN
            else:
                expected = torch.from_numpy(mask_of(index).astype(np.float16).astype(np.float32))
                assert torch.equal(masks[row], expected)
        assert torch.equal(store.masks([9, 0, 9]), masks[[9, 0, 9]])
        assert torch.equal(store.masks(table["status"] == "ok"), masks[table["status"] == "ok"])
        assert torch.equal(store.masks(slice(3, 6)), masks[3:6])
        assert store.row_of_path("n02124075/img_8.JPEG") == 9
        assert torch.equal(store.mask_for("n02124075/img_8.JPEG"), masks[9])
        with pytest.raises(StoreError, match="img_99"):
            store.row_of_path("n02124075/img_99.JPEG")
        with pytest.raises(StoreError, match="out of range"):
            store.masks([10])

        up = F.interpolate(masks[:2], size=(224, 224), mode="bilinear", align_corners=True)
        assert torch.equal(store.masks_at([0, 1]), up)
        assert torch.equal(resize(masks[:2], (224, 224)), up)
        assert store.masks_at([1], size=(50, 60)).shape == (1, 1, 50, 60)
        originals = store.masks_at([0, 8], size="original")
        assert [tuple(m.shape) for m in originals] == [(1, 100, 200), (1, 109, 209)]

        assert store.config == json.loads(json.dumps(CONFIG))
        assert store.attrs["run_key"] == run_key(CONFIG)
        assert store.model == "tf_efficientnet_lite0" and store.source == "/data/val"
        assert store.mask_shape == SHAPE and store.attrs["schema_version"] == 1
        assert set(store.attrs["versions"]) >= {"pipeline", "torch", "h5py", "python"}
        info = summary(store)
    assert (info["done"], info["ok"], info["skipped"]) == (10, 9, 1)
    assert info["skipped_by_reason"] == {"truncated": 1}
    assert info["means"]["p_final"] == pytest.approx(0.05)
    assert info["config"] == store.config and info["model"] == "tf_efficientnet_lite0"
    with h5py.File(path, "r") as raw:  # the plain HDF5 contract other tools rely on
        assert raw["mask"].dtype == np.float16 and raw["mask"].chunks == (1, *SHAPE)
        assert raw["mask"].compression == "gzip" and int(raw.attrs["rows"]) == 10


def test_resume_appends_after_committed_rows(tmp_path):
    path = tmp_path / "masks.h5"
    write(path, [batch([0, 1, 2]), batch([3, 4])])
    with MaskWriter(path, CONFIG, "tf_efficientnet_lite0", "/data/val") as writer:
        assert writer.done_indices() == {0, 1, 2, 3, 4} and len(writer) == 5
        with pytest.raises(StoreError, match="twice"):
            writer.append(*batch([4, 5]))
        with pytest.raises(StoreError, match=r"extra columns are \[.area.\]"):
            writer.append(*batch([5], extras=()))
        writer.append(*batch([6, 5]))
    with MaskStore(path) as store:
        assert store.column("index").tolist() == [0, 1, 2, 3, 4, 6, 5]
        assert torch.equal(store.masks([6])[0], torch.from_numpy(mask_of(5)).half().float())


def test_different_configuration_is_refused_naming_the_key(tmp_path):
    path = tmp_path / "masks.h5"
    write(path, [batch([0])])
    changed = {**CONFIG, "solver": {"iterations": 500, "lr": 0.1}}
    with pytest.raises(StoreError, match=r"different configuration.*solver\.iterations: file 300, "
                                         r"now 500.*--overwrite"):
        MaskWriter(path, changed, "tf_efficientnet_lite0", "/data/val")
    with pytest.raises(StoreError, match="model 'tf_efficientnet_lite0'.*resnet50"):
        MaskWriter(path, CONFIG, "resnet50", "/data/val")
    # tuples and lists are the same configuration (JSON has only lists)
    same = {**CONFIG, "size": [224, 224]}
    with MaskWriter(path, same, "tf_efficientnet_lite0", "/data/val") as writer:
        assert writer.done_indices() == {0}


def test_overwrite_starts_afresh(tmp_path):
    path = tmp_path / "masks.h5"
    write(path, [batch([0, 1])])
    changed = {**CONFIG, "perturbation": "noise"}
    write(path, [batch([7], extras=("tv",))], config=changed, overwrite=True)
    with MaskStore(path) as store:
        assert store.column("index").tolist() == [7]
        assert store.config["perturbation"] == "noise" and "tv" in store.columns


def test_bad_appends_and_files_are_refused(tmp_path):
    path = tmp_path / "masks.h5"
    with MaskWriter(path, CONFIG, "m", "/data") as writer:
        rows, masks = batch([0, 1])
        with pytest.raises(StoreError, match="shape"):
            writer.append(rows, masks[:, :, :14])
        with pytest.raises(StoreError, match=r"needs the columns \['loss'\]"):
            writer.append({k: v for k, v in rows.items() if k != "loss"}, masks)
        with pytest.raises(StoreError, match="status values"):
            writer.append({**rows, "status": ["ok", "done"]}, masks)
        with pytest.raises(StoreError, match="'label' must hold integers"):
            writer.append({**rows, "label": [0.5, 1.0]}, masks)
        with pytest.raises(StoreError, match="masks=None"):
            writer.append(rows, None)
        writer.append(*batch([2], skipped={2})[:1], None)  # all skipped: masks may be None
        assert len(writer) == 1
    with pytest.raises(ConfigError, match="mask_shape"):
        MaskWriter(tmp_path / "x.h5", CONFIG, "m", "/data", mask_shape=(28, 28))
    with pytest.raises(StoreError, match="no mask store"):
        MaskStore(tmp_path / "missing.h5")
    (tmp_path / "junk.h5").write_text("not HDF5")
    with pytest.raises(StoreError, match="--overwrite"):
        MaskWriter(tmp_path / "junk.h5", CONFIG, "m", "/data")
    with h5py.File(tmp_path / "foreign.h5", "w") as foreign:
        foreign["data"] = [1, 2]
    with pytest.raises(StoreError, match="not a mask store"):
        MaskStore(tmp_path / "foreign.h5")


def test_store_file_is_never_written_in_place_between_folds(tmp_path):
    path = tmp_path / "masks.h5"
    write(path, [batch([0, 1])])
    before = path.read_bytes()
    with MaskWriter(path, CONFIG, "tf_efficientnet_lite0", "/data/val", merge_every=3) as writer:
        writer.append(*batch([2, 3]))
        writer.append(*batch([4]))
        assert path.read_bytes() == before and len(list(parts_dir(path).iterdir())) == 2
        writer.append(*batch([5]))  # the third part: folded into a copy renamed over the file
        assert path.read_bytes() != before and not any(parts_dir(path).iterdir())
        writer.append(*batch([6]))
    assert not parts_dir(path).exists()  # close() folds the rest
    with MaskStore(path) as store:
        assert store.column("index").tolist() == list(range(7)) and store.pending_parts == 0
        assert torch.equal(store.masks([6])[0], torch.from_numpy(mask_of(6)).half().float())


def test_what_kills_leave_is_read_and_cleaned_on_reopen(tmp_path):
    path = tmp_path / "masks.h5"
    write(path, [batch([0, 1, 2])])
    killed(path, [batch([3, 4]), batch([5], skipped={5})])
    parts = parts_dir(path)
    # a kill while writing a part, and a kill while folding (a half-made copy of the store)
    (parts / "000000009.h5.tmp").write_bytes(b"half a part")
    _temporary = path.with_name(path.name + ".tmp")
    _temporary.write_bytes(path.read_bytes()[:500])
    with MaskStore(path) as store:  # a killed run reads whole: store file plus parts
        assert store.pending_parts == 2 and len(store) == 6
        assert store.column("index").tolist() == [0, 1, 2, 3, 4, 5]
        assert store.table()["status"].tolist() == ["ok"] * 5 + ["skipped"]
        assert torch.equal(store.masks([4, 0])[0], torch.from_numpy(mask_of(4)).half().float())
        assert store.masks([5]).isnan().all()
    with MaskWriter(path, CONFIG, "tf_efficientnet_lite0", "/data/val") as writer:
        assert writer.done_indices() == set(range(6)) and len(writer) == 6
        assert not _temporary.exists() and not (parts / "000000009.h5.tmp").exists()
        writer.append(*batch([7, 6]))
    with MaskStore(path) as store:
        assert store.column("index").tolist() == [0, 1, 2, 3, 4, 5, 7, 6]
    # a kill after a fold's rename, before it deleted its parts: they are not read twice
    killed(path, [batch([8])])
    saved = {p.name: p.read_bytes() for p in parts.iterdir()}
    write(path, [])  # opens and folds
    parts.mkdir()
    for name, data in saved.items():
        (parts / name).write_bytes(data)
    with MaskStore(path) as store:
        assert store.column("index").tolist() == [0, 1, 2, 3, 4, 5, 7, 6, 8]
    write(path, [batch([9])])
    with MaskStore(path) as store:
        assert store.column("index").tolist() == [0, 1, 2, 3, 4, 5, 7, 6, 8, 9]
    # a kill inside the very first batch: its extra columns are not binding
    first = tmp_path / "first.h5"
    write(first, [])
    parts_dir(first).mkdir()
    (parts_dir(first) / "000000001.h5.tmp").write_bytes(b"area...")
    write(first, [batch([0], extras=("tv",))])
    with MaskStore(first) as store:
        assert store.columns[-1] == "tv" and "area" not in store.columns


def test_second_writer_is_refused_while_readers_see_committed_rows(tmp_path):
    path = tmp_path / "masks.h5"
    with MaskWriter(path, CONFIG, "tf_efficientnet_lite0", "/data/val") as writer:
        writer.append(*batch([0, 1]))
        with pytest.raises(StoreError, match="being written by another process"):
            MaskWriter(path, CONFIG, "tf_efficientnet_lite0", "/data/val")
        with MaskStore(path) as store:
            assert store.column("index").tolist() == [0, 1] and store.pending_parts == 1
        writer.append(*batch([2]))
    write(path, [batch([3])])  # the lock went with the first writer
    with MaskStore(path) as store:
        assert store.column("index").tolist() == [0, 1, 2, 3]


def test_damaged_store_is_refused(tmp_path):
    path = tmp_path / "masks.h5"
    write(path, [batch([0, 1])])
    with h5py.File(path, "r+") as file:
        file.attrs["rows"] = 5
    with pytest.raises(StoreError, match="damaged.*--overwrite"):
        MaskWriter(path, CONFIG, "tf_efficientnet_lite0", "/data/val")


def test_interrupted_fold_never_folds_twice(tmp_path, monkeypatch):
    path = tmp_path / "masks.h5"
    unlink = Path.unlink

    def interrupted(self, *args, **kwargs):  # Ctrl-C while a fold deletes its parts
        if self.parent == parts_dir(path) and self.suffix == ".h5":
            raise KeyboardInterrupt
        return unlink(self, *args, **kwargs)

    with pytest.raises(KeyboardInterrupt):
        with MaskWriter(path, CONFIG, "tf_efficientnet_lite0", "/data/val", merge_every=2) as writer:
            writer.append(*batch([0, 1]))
            monkeypatch.setattr(Path, "unlink", interrupted)
            writer.append(*batch([2]))  # folds, and is interrupted; then __exit__ closes
    monkeypatch.undo()
    assert len(list(parts_dir(path).iterdir())) == 2  # folded, left behind
    with MaskStore(path) as store:
        assert store.column("index").tolist() == [0, 1, 2] and store.pending_parts == 0
    write(path, [batch([3])])
    with MaskStore(path) as store:
        assert store.column("index").tolist() == [0, 1, 2, 3]
    assert not parts_dir(path).exists()


def test_full_disk_keeps_committed_rows_and_says_so(tmp_path, monkeypatch):
    import pipeline.store.writer as writer_module

    path = tmp_path / "masks.h5"
    full = OSError(28, "No space left on device")
    with MaskWriter(path, CONFIG, "tf_efficientnet_lite0", "/data/val", merge_every=2) as writer:
        writer.append(*batch([0]))

        def no_room(*args):
            raise full

        monkeypatch.setattr(writer_module.shutil, "copyfile", no_room)
        with pytest.warns(UserWarning, match="cannot fold.*disk full"):
            writer.append(*batch([1]))  # committed; only the fold failed
        assert len(writer) == 2 and not path.with_name("masks.h5.tmp").exists()
        monkeypatch.setattr(writer_module, "fsync", no_room)
        with pytest.raises(StoreError, match="cannot write a batch.*disk full.*2 rows committed"):
            writer.append(*batch([2]))
        assert len(writer) == 2 and not any(p.name.endswith(".tmp") for p in parts_dir(path).iterdir())
        monkeypatch.undo()
    with MaskStore(path) as store:  # close() folded, now that there is room
        assert store.column("index").tolist() == [0, 1] and store.pending_parts == 0


def test_lock_is_released_by_close_and_by_a_killed_writer_with_forked_children(tmp_path):
    path = tmp_path / "masks.h5"
    lock = path.with_name("masks.h5.lock")
    lock.write_text("")  # a lock file a killed writer left: no process holds it
    write(path, [batch([0])])
    assert not lock.exists()
    # A writer whose forked child (as a DataLoader worker) outlives it: the child must not keep
    # the store locked.
    script = "\n".join([
        "import os, sys, time",
        f"sys.path.insert(0, {str(ROOT)!r})",
        "from pipeline.store import MaskWriter",
        f"writer = MaskWriter({str(path)!r}, {CONFIG!r}, 'tf_efficientnet_lite0', '/data/val')",
        "child = os.fork()",
        "if child == 0:",
        "    time.sleep(60)",
        "    os._exit(0)",
        "print(child, flush=True)",
        "time.sleep(60)",
    ])
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        with pytest.raises(StoreError, match="being written by another process"):
            MaskWriter(path, CONFIG, "tf_efficientnet_lite0", "/data/val")
        parent.kill()
        parent.wait()
        write(path, [batch([1])])  # at once, while the child lives
        os.kill(child, 0)  # still alive, so the resume above did not wait for it
    finally:
        parent.stdout.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    with MaskStore(path) as store:
        assert store.column("index").tolist() == [0, 1]


def test_extra_columns_of_parts_read_before_any_fold(tmp_path):
    path = tmp_path / "masks.h5"
    killed(path, [batch([0, 1], extras=("area", "tv"))])
    with MaskStore(path) as store:
        assert store.columns[-2:] == ["area", "tv"] and store.column("tv").tolist() == [0, np.float32(0.001)]
        assert summary(store)["done"] == 2


# A writer that appends 8 rows per batch and folds every 8 batches, to be killed at random
# moments. When the store was appended in place, a rare kill (once in a CI run, once in 298 kills
# of this loop) left HDF5 metadata pointing past the end of the file, and committed rows could no
# longer be read.
KILL_LOOP = """
total, size = int(sys.argv[2]), int(sys.argv[3])
with MaskWriter(sys.argv[1], CONFIG, "toy", "/data", merge_every=8) as writer:
    todo = [i for i in range(total) if i not in writer.done_indices()]
    print("ready", flush=True)
    for start in range(0, len(todo), size):
        indices = todo[start:start + size]
        writer.append(*batch(indices, skipped={i for i in indices if i % 13 == 0}))
        time.sleep(0.002)
"""


def _kill_script() -> str:
    """A writer loop for ``python -c``; it imports the shared row helpers, not this file's imports
    (torch would add seconds to every start)."""
    return "\n".join([
        "import sys, time",
        f"sys.path.insert(0, {str(ROOT)!r})",
        "from pipeline.store import MaskWriter",
        "from tests.helpers.rows import CONFIG, batch",
        KILL_LOOP,
    ])


def _check_committed(path: Path, before: tuple[np.ndarray, torch.Tensor]) -> tuple:
    """Open after a kill: every committed row reads, is right, and earlier rows are unchanged."""
    with MaskStore(path) as store:
        index, masks = store.column("index"), store.masks()
        table = store.table()
    assert len(set(index.tolist())) == len(index) == len(table)
    expected = [np.full(SHAPE, np.nan) if i % 13 == 0 else mask_of(i) for i in index.tolist()]
    expected = np.array(expected, dtype=np.float16).reshape(-1, *SHAPE)
    np.testing.assert_array_equal(masks.numpy(), expected)
    old_index, old_masks = before
    np.testing.assert_array_equal(index[: len(old_index)], old_index)
    assert torch.equal(masks[: len(old_index)].nan_to_num(-1), old_masks.nan_to_num(-1))
    return index, masks


def test_sigkill_at_random_moments_then_resume(tmp_path):
    # 8 kills leave about 1,700 of 6,000 rows here (8 rows a batch); the resume that completes
    # the store writes 500 a batch.
    path, total = tmp_path / "killed.h5", 6000
    command = [sys.executable, "-c", _kill_script(), str(path), str(total)]
    state = (np.empty(0, dtype=np.int64), torch.empty(0, *SHAPE))
    moments = random.Random(1234)
    for _ in range(8):
        child = subprocess.Popen([*command, "8"], stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        try:
            child.wait(timeout=moments.uniform(0.05, 0.6))
        except subprocess.TimeoutExpired:
            os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stdout.close()
        state = _check_committed(path, state)
    assert 0 < len(state[0]) < total  # the kills landed mid-run
    finished = subprocess.run([*command, "500"], capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    index, _ = _check_committed(path, state)
    assert sorted(index.tolist()) == list(range(total))


def test_merge_takes_a_killed_shards_unfolded_batches(tmp_path):
    base = tmp_path / "run" / "masks.h5"
    write(base, [batch([0, 2])], shard=(0, 2))
    killed(base, [batch([1]), batch([3])], shard=(1, 2))
    shards = [shard_path(base, r, 2) for r in range(2)]
    merged = merge_shards(shards, tmp_path / "merged.h5")
    with MaskStore(merged) as store:
        assert store.column("index").tolist() == [0, 1, 2, 3] and store.pending_parts == 0
        assert json.loads(store.attrs["merged_from"]) == [p.name for p in shards]
        assert torch.equal(store.masks([3])[0], torch.from_numpy(mask_of(3)).half().float())


def test_shards_merge_sorted_by_index(tmp_path):
    base = tmp_path / "run" / "masks.h5"
    for rank, indices in enumerate([[4, 0, 2], [1, 5, 3]]):
        write(base, [batch(indices[:2], skipped={5}), batch(indices[2:])], shard=(rank, 2))
    shards = [shard_path(base, r, 2) for r in range(2)]
    assert [p.name for p in shards] == ["masks.shard-0-of-2.h5", "masks.shard-1-of-2.h5"]
    with MaskStore(shards[1]) as store:
        assert store.shard == "1-of-2" and store.run_key == run_key(CONFIG)

    merged = merge_shards(shards, tmp_path / "merged.h5")

    with MaskStore(merged) as store:
        assert store.column("index").tolist() == [0, 1, 2, 3, 4, 5]
        assert store.run_key == run_key(CONFIG) and store.shard == ""
        masks = store.masks()
        for row in range(5):
            assert torch.equal(masks[row], torch.from_numpy(mask_of(row)).half().float())
        assert torch.isnan(masks[5]).all() and store.column("status")[5] == "skipped"
        assert store.column("path")[3] == "n02124075/img_3.JPEG"
        np.testing.assert_allclose(store.column("area"), np.arange(6) / 1000, rtol=1e-6)
    with pytest.raises(StoreError, match="exists"):
        merge_shards(shards, merged)
    with pytest.raises(StoreError, match="ranks"):
        merge_shards(shards[:1], tmp_path / "partial.h5")
    # the same image solved twice, or a shard of another run, is refused
    other = tmp_path / "other" / "masks.h5"
    write(other, [batch([9, 2])], shard=(1, 2))
    with pytest.raises(StoreError, match="index 2"):
        merge_shards([shards[0], shard_path(other, 1, 2)], tmp_path / "dup.h5")
    write(other, [batch([9])], config={**CONFIG, "perturbation": "noise"}, shard=(0, 2))
    with pytest.raises(StoreError, match="run_key differs"):
        merge_shards([shard_path(other, 0, 2), shards[1]], tmp_path / "mixed.h5")
