"""Reliability of a dataset run: odd file names, fuzzed files, decompression bombs, determinism.

The runs use the tiny TorchScript classifier (``tiny_model``, tests/conftest.py): what is tested
is the input handling and the store, which do not depend on the model, and it keeps each run to
about a second; the damaged files come from tests/helpers/damage.py, as in
the ``fuzz`` benchmark mode.
"""

import builtins
import io
import os
import re
import struct
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import skimage.data
from PIL import Image
from typer.testing import CliRunner

import pipeline.jobs.run
from pipeline.cli import app
from pipeline.config import override, preset
from pipeline.data import MAX_DECODED_PIXELS, REASONS, ImageDataset, ImageRecord, decode_image, discover
from pipeline.errors import ImageReadError
from pipeline.models import load_model
from pipeline.jobs.run import RunConfig, run_masks, store_config
from pipeline.store import MaskStore
from tests.helpers.damage import NO_PERMISSION, VANISH, add_odd_entries, make_damaged, stated_png
from tests.helpers.evaluations import base_table, write_run

runner = CliRunner()


def _jpeg(picture: str, size=(96, 72)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(getattr(skimage.data, picture)()[..., :3]).resize(size).save(buffer, "JPEG")
    return buffer.getvalue()


def _masks(data: Path, out: Path, tiny_model: str, *extra: str):
    args = ["masks", str(data), "--out", str(out), "-n", "2", "-b", "3", "--workers", "0", "--device", "cpu",
            "--model", tiny_model, *extra]
    return runner.invoke(app, args)


def test_a_name_that_is_not_utf8_is_stored_and_opens_again(tmp_path, tiny_model):
    data = tmp_path / "data"
    data.mkdir()
    latin1 = os.fsdecode(b"caf\xe9.JPEG")  # 'caf\udce9.JPEG', as Python lists it
    (data / latin1).write_bytes(_jpeg("chelsea"))
    (data / "plain.jpg").write_bytes(_jpeg("coffee"))
    result = _masks(data, tmp_path / "m.h5", tiny_model)
    assert result.exit_code == 0, result.output
    with MaskStore(tmp_path / "m.h5") as store:
        table = store.table()
        assert sorted(table["path"]) == [latin1, "plain.jpg"]
        assert (table["status"] == "ok").all()
        row = store.row_of_path(latin1)
        reopened = ImageDataset([ImageRecord(Path(store.source) / latin1, latin1)])[0]
        assert reopened["ok"] and reopened["width"] == 96
    with h5py.File(tmp_path / "m.h5") as file:  # the file system's bytes, exactly
        assert file["path"][row] == b"caf\xe9.JPEG"
    inspected = runner.invoke(app, ["inspect", str(tmp_path / "m.h5")])
    assert inspected.exit_code == 0 and "2 ok, 0 skipped" in inspected.output
    exported = runner.invoke(app, ["export", str(tmp_path / "m.h5"), "--out", str(tmp_path / "pics")])
    assert exported.exit_code == 0, exported.output
    assert (tmp_path / "pics" / (os.fsdecode(b"caf\xe9") + "_overlay.png")).is_file()
    from pipeline.evaluation import EvalConfig, evaluate_store

    evaluated = evaluate_store(tmp_path / "m.h5", None, load_model(tiny_model), tmp_path / "eval",
                               config=EvalConfig(step=4096, workers=0, plots=False))
    assert evaluated.table["eval_status"].eq("ok").all()
    assert "caf\\xe9.JPEG" in (tmp_path / "eval" / "per_image.csv").read_text(encoding="utf-8")
    from pipeline.report import write_report

    page = write_report([tmp_path / "eval"], tmp_path / "report.html")
    assert "caf\\xe9.JPEG" in Path(page).read_text(encoding="utf-8")


def test_fuzzed_files_and_odd_entries_each_get_a_row_and_stop_nothing(tmp_path, tiny_model, monkeypatch):
    pictures = [(_jpeg(name), ".JPEG") for name in ("chelsea", "coffee", "astronaut")]
    png = io.BytesIO()
    Image.fromarray(skimage.data.rocket()).resize((48, 32)).save(png, "PNG")
    folder = tmp_path / "fuzz"
    kinds = make_damaged(folder, pictures + [(png.getvalue(), ".png")], 36, seed=3)
    kinds.update(add_odd_entries(folder, pictures[0][0]))
    listed = discover(folder)
    real_open, real_discover = builtins.open, pipeline.jobs.run.discover

    def guarded_open(file, *args, **kwargs):  # root reads mode-000 files: refuse these instead
        if isinstance(file, (str, bytes, os.PathLike)) and NO_PERMISSION in os.fsdecode(file):
            raise PermissionError(13, "Permission denied", os.fsdecode(file))
        return real_open(file, *args, **kwargs)

    def discover_then_delete(*args, **kwargs):  # files that vanish after the listing
        records = real_discover(*args, **kwargs)
        for record in records:
            if VANISH in record.path.name:
                record.path.unlink()
        return records

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(pipeline.jobs.run, "discover", discover_then_delete)
    classifier = load_model(tiny_model)
    config = override(preset("blur"), ["optim.iterations=1"])
    summary = run_masks(folder, tmp_path / "f.h5", classifier, config, RunConfig(batch_size=8, workers=0,
                                                                                  progress=False))
    monkeypatch.undo()
    with MaskStore(tmp_path / "f.h5") as store:
        table = store.table().set_index("path")
    assert len(table) == len(listed) == summary.total and table.index.is_unique
    skipped = table[table["status"] == "skipped"]
    assert set(skipped["reason"]) <= set(REASONS) and summary.solved == (table["status"] == "ok").sum()
    reason = table["reason"].to_dict()
    assert reason["fifo.JPEG"] == "not a file"
    assert reason["dangling_0.JPEG"] == reason["vanish_0.JPEG"] == "missing"
    assert reason["noperm_0.JPEG"] == "unreadable" and reason["mode000_0.JPEG"] == ""  # root reads it
    assert reason["bomb_100000.png"] == "too large"
    assert reason[os.fsdecode(b"caf\xe9.JPEG")] == "" and reason["a_folder.JPEG/inside.JPEG"] == ""
    empty = [n for n, k in kinds.items() if k == "empty"]
    assert empty and all(reason[n] == "empty file" for n in empty)
    assert all(reason[n] == "not an image" for n, k in kinds.items() if k == "random_bytes")


def test_decompression_bombs_are_skipped_and_a_giant_jpeg_is_decoded_small(tmp_path, tiny_model):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(stated_png(100_000, 100_000))
    jpeg = bytearray(_jpeg("chelsea", (16, 16)))
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5:sof + 9] = struct.pack(">HH", 65500, 65500)  # the largest size a JPEG can state
    (tmp_path / "bomb.jpg").write_bytes(bytes(jpeg))
    giant = tmp_path / "giant.jpg"
    Image.new("L", (12_000, 12_000), 90).save(giant, quality=50)  # flat: small on disk, quick to write
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning either
        for path, reason in ((bomb, "too large"), (tmp_path / "bomb.jpg", "truncated")):
            with pytest.raises(ImageReadError) as caught:
                decode_image(path, draft_size=(448, 448))
            assert caught.value.reason == reason
        pixels, original = decode_image(giant, draft_size=(448, 448))
    assert original == (12_000, 12_000) and pixels.shape == (1_500, 1_500, 3)  # libjpeg's 1/8 scale
    assert int(pixels[0, 0, 0]) in range(88, 93)
    records = [ImageRecord(giant, "giant.jpg")]
    assert ImageDataset(records)[0]["ok"]
    limited = ImageDataset(records, max_pixels=2_000_000)[0]
    assert not limited["ok"] and limited["reason"] == "too large"
    # The limit is part of the run's identity only when it is not the default (older stores resume).
    classifier = load_model(tiny_model)
    solver = preset("blur")
    assert "max_pixels" not in store_config(solver, RunConfig(), classifier)
    assert store_config(solver, RunConfig(max_pixels=10**6), classifier)["max_pixels"] == 10**6
    assert RunConfig().max_pixels == MAX_DECODED_PIXELS
    result = _masks(tmp_path, tmp_path / "out" / "m.h5", tiny_model, "--max-pixels", "2000000")
    assert result.exit_code == 0, result.output
    with MaskStore(tmp_path / "out" / "m.h5") as store:
        reasons = dict(zip(store.column("path"), store.column("reason")))
        assert store.config["max_pixels"] == 2_000_000
    assert reasons == {"bomb.jpg": "too large", "bomb.png": "too large", "giant.jpg": "too large"}


def test_the_same_command_twice_gives_bit_identical_stores(tmp_path, tiny_model):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("chelsea", "coffee", "astronaut", "rocket"):
        (data / f"{name}.jpg").write_bytes(_jpeg(name))
    (data / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    # The jacobgil preset adds noise at every iteration: each image's stream must repeat exactly.
    for out in ("a.h5", "b.h5"):
        result = _masks(data, tmp_path / out, tiny_model, "--preset", "jacobgil", "-n", "3")
        assert result.exit_code == 0, result.output
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b:
        assert sorted(a) == sorted(b)
        for name in a:
            left, right = a[name][()], b[name][()]
            if left.dtype.kind == "f":  # bits, NaN included (skipped rows)
                left, right = left.view(f"u{left.itemsize}"), right.view(f"u{right.itemsize}")
            assert np.array_equal(left, right), name
        masks = a["mask"][()]
        assert np.isfinite(masks).sum() == 4 * 28 * 28 and np.nanstd(masks) > 0
        differing = {k for k in a.attrs if not np.array_equal(a.attrs[k], b.attrs[k])}
        assert differing <= {"created"}  # the only time the store records


def test_names_from_the_data_cannot_add_markup_to_reports(tmp_path):
    from pipeline.report.compare import compare_runs
    from pipeline.names import display_name, html_text, markdown_code, markdown_text, stored_name

    latin1 = os.fsdecode(b"caf\xe9.JPEG")
    assert stored_name(latin1) == b"caf\xe9.JPEG" and stored_name("caf\u00e9.JPEG") == "caf\u00e9.JPEG"
    assert display_name(latin1) == "caf\\xe9.JPEG"
    assert markdown_text("<img src=x>|*a*") == "\\<img src=x\\>\\|\\*a\\*"
    assert markdown_code("a`b|c") == "``a`b\\|c``" and markdown_code("`x") == "`` `x ``"
    assert html_text('<b a="1">&') == "&lt;b a=&quot;1&quot;&gt;&amp;"

    names = ["plain", "<script>x<¦script> | `tick` *b*"]
    runs = [write_run(tmp_path / name, base_table(seed=k), curves=False) for k, name in enumerate(names)]
    compare_runs(runs, tmp_path / "cmp", n_boot=20)
    markdown = (tmp_path / "cmp" / "comparison.md").read_text()
    outside_code = re.sub(r"(`+)(?!`).+?(?<!`)\1(?!`)", "", markdown)
    assert "<script>" in markdown and "<script>" not in outside_code  # shown only as code
    table_rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert {len(re.findall(r"(?<!\\)\|", line)) for line in table_rows} == {8}  # 7 cells: none added
