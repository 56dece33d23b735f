"""Pictures: stored rows paired with their images (both frames), the pictures ``perturb export``
draws, gallery picks, and a report built from an evaluation folder alone.

Every store here is made by hand with one mask, ``[[1, 0], [1, 0]]`` (keep the left, perturb the
right), in a baseline store: the saliency is ``1 - m`` upsampled bilinearly with
``align_corners=True``, so at the 16 x 16 input column ``j`` has saliency ``j / 15`` whatever the
row. In an image's original frame (width 32) the input-size map is resized bilinearly with
``align_corners=False``: column ``x`` samples input column ``x / 2 - 0.25`` (clamped to [0, 15]),
so its saliency is ``clip(x / 2 - 0.25, 0, 15) / 15``.
"""

import base64
import io
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib import colormaps
from PIL import Image

from pipeline.errors import ImageReadError
from pipeline.evaluation import (
    THUMBNAILS_FILE,
    EvalConfig,
    evaluate_store,
    gallery_picks,
    picture_rows,
    read_thumbnails,
    stored_pictures,
)
from pipeline.metrics import ImageBoxes
from pipeline.models import Classifier
from pipeline.report import ReportConfig, build_report, write_report
from pipeline.report.export import export_pictures
from pipeline.store import COLUMNS, MaskStore, MaskWriter
from tests.helpers.models import mean_colour_classifier

RAMP = np.arange(16) / 15  # saliency of input column j
MASK = np.array([[[1.0, 0.0], [1.0, 0.0]]], dtype=np.float32)  # (K=1, 2, 2)


def write_store(path, root, rows: list[dict]) -> None:
    """A baseline store by hand, every row with :data:`MASK`; ``rows`` give path and overrides."""
    defaults = {"height": 16, "width": 16, "label": 0, "target": 0, "status": "ok", "reason": "",
                "p_original": 0.5, "p_perturbed": 0.1, "p_final": 0.2, "loss": 0.3, "area": 0.25, "tv": 0.01}
    full = [{**defaults, "index": i, **row} for i, row in enumerate(rows)]
    columns = {name: [r[name] for r in full] for name in [*COLUMNS, "area", "tv"]}
    masks = np.stack([MASK] * len(rows))
    with MaskWriter(path, {"baseline": "hand", "model": "tiny"}, "tiny", root, masks.shape[1:],
                    input_size=(16, 16)) as writer:
        writer.append(columns, masks)


def save(path, array01: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.asarray(array01) * 255).round().astype(np.uint8)).save(path)


def tiny_classifier() -> Classifier:
    """Mean-pool then a fixed linear layer (logit 0 = 16 * mean of the image), 16 x 16 input."""
    weight = torch.zeros(10, 3)
    weight[0] = 16 / 3
    return mean_colour_classifier(weight)


def jet_uint8(s: np.ndarray) -> np.ndarray:
    return (np.clip(colormaps["jet"](s)[..., :3], 0, 1) * 255 + 0.5).astype(np.uint8)


@pytest.fixture()
def two_images(tmp_path):
    """Row 0: a 16 x 32 (H x W) gradient image; row 1: 16 x 16 grey; row 2: a missing file."""
    root = tmp_path / "data"
    wide = np.zeros((16, 32, 3))
    wide[..., 0] = np.linspace(0, 1, 32)[None, :]
    wide[..., 2] = 0.5
    save(root / "a" / "wide.png", wide)
    save(root / "a" / "grey.png", np.full((16, 16, 3), 0.4))
    store = tmp_path / "s.h5"
    write_store(store, root, [{"path": "a/wide.png", "width": 32}, {"path": "a/grey.png"}, {"path": "a/gone.png"}])
    return store, root, wide


def test_stored_pictures_pair_rows_with_images_and_saliency_in_both_frames(two_images):
    store_path, root, wide = two_images
    with MaskStore(store_path) as store:
        for batch_size in (1, 2, 8):  # the batching knob changes nothing but the batches
            batches = list(stored_pictures(store, [2, 1, 0], root, batch_size=batch_size))
            assert len(batches) == -(-3 // batch_size)
            rows = np.concatenate([b.rows for b in batches])
            ok = np.concatenate([b.ok for b in batches])
            images = torch.cat([b.images for b in batches])
            saliency = torch.cat([b.saliency for b in batches])
            assert rows.tolist() == [2, 1, 0] and ok.tolist() == [False, True, True]
            assert sum((b.reasons for b in batches), [])[0] == "missing"
            assert sum((b.paths for b in batches), []) == ["a/gone.png", "a/grey.png", "a/wide.png"]
            assert images.shape == (3, 3, 16, 16) and float(images[0].abs().max()) == 0.0
            assert torch.allclose(images[1], torch.full((3, 16, 16), 102 / 255))
            # the wide image squeezed to 16 columns (PIL bilinear): red still rises left to right
            assert bool((images[2, 0, 0, 1:] > images[2, 0, 0, :-1]).all())
            for i in range(3):
                np.testing.assert_allclose(saliency[i, 0].numpy(), np.tile(RAMP, (16, 1)), atol=1e-6)
        original = list(stored_pictures(store, [0, 2], root, frame="original"))
    assert [len(b.rows) for b in original] == [1, 1] and original[1].ok.tolist() == [False]
    first = original[0]
    assert first.images.shape == (1, 3, 16, 32)
    np.testing.assert_allclose(first.images[0].permute(1, 2, 0).numpy(), np.round(wide * 255) / 255, atol=1e-6)
    expected = np.clip(np.arange(32) / 2 - 0.25, 0, 15) / 15
    np.testing.assert_allclose(first.saliency[0, 0].numpy(), np.tile(expected, (16, 1)), atol=1e-6)


def test_export_draws_heatmap_and_overlay_at_the_original_size(two_images, tmp_path):
    store_path, root, wide = two_images
    files = export_pictures(store_path, tmp_path / "out", rows=[0, 1])
    assert sorted(p.name for p in files) == ["a__grey_heatmap.png", "a__grey_overlay.png", "a__wide_heatmap.png",
                                            "a__wide_overlay.png"]
    s = np.tile(np.clip(np.arange(32) / 2 - 0.25, 0, 15) / 15, (16, 1))  # already spans [0, 1]
    heat = np.asarray(Image.open(tmp_path / "out" / "a__wide_heatmap.png"))
    assert heat.shape == (16, 32, 3)
    # equal but where float32 rounding puts a value in the colour table's next bin (1/256 apart)
    assert np.abs(heat.astype(int) - jet_uint8(s)).max() <= 4 and (heat == jet_uint8(s)).mean() > 0.99
    overlay = np.asarray(Image.open(tmp_path / "out" / "a__wide_overlay.png")).astype(int)
    jet = colormaps["jet"](s)[..., :3]
    expected = (np.clip(0.5 * np.round(wide * 255) / 255 + 0.5 * jet, 0, 1) * 255 + 0.5).astype(int)
    assert np.abs(overlay - expected).max() <= 2 and (np.abs(overlay - expected) <= 1).mean() > 0.99
    with pytest.raises(ImageReadError, match="gone.png"):
        export_pictures(store_path, tmp_path / "more", rows=[2])


def test_gallery_picks_by_hand_and_picture_rows_cover_every_smaller_gallery():
    table = pd.DataFrame({"path": [f"img{i}.png" for i in range(7)],
                          "eval_status": ["ok"] * 6 + ["unreadable: missing"],
                          "status": ["ok"] * 7,
                          "insertion_auc": [0.3, 0.9, 0.3, 0.1, np.nan, 0.5, np.nan],
                          "deletion_auc_zero": [0.2, 0.4, 0.1, 0.4, 0.3, 0.0, np.nan],
                          "p_original": [0.5] * 7, "p_perturbed": [0.1, 0.4, 0.1, 0.45, 0.1, 0.1, 0.1]},
                         index=np.arange(10, 17))  # index = store row position
    evaluated = table[table["eval_status"] == "ok"]
    picks = gallery_picks(evaluated, "insertion_auc", 2, 0)
    assert list(picks["best"]["path"]) == ["img1.png", "img5.png"]  # higher is better
    assert list(picks["worst"]["path"]) == ["img3.png", "img2.png"]  # ties (0.3) in reverse table order
    picks = gallery_picks(evaluated, "deletion_auc_zero", 3, 0)
    assert list(picks["best"]["path"]) == ["img5.png", "img2.png", "img0.png"]  # lower is better
    assert list(picks["worst"]["path"]) == ["img3.png", "img1.png", "img4.png"]
    assert len(picks["random"]) == 3 and picks["random"]["path"].is_monotonic_increasing
    # The random sample depends on the paths and the seed only, not on the table's order or index.
    shuffled = evaluated.iloc[::-1].reset_index(drop=True)
    assert list(gallery_picks(shuffled, "deletion_auc_zero", 3, 0)["random"]["path"]) == list(picks["random"]["path"])
    assert gallery_picks(evaluated, "energy_pg", 3, 0) == {}
    # Every row any gallery of up to 2 pictures per row shows, and the 4 weakest perturbations.
    rows = set(picture_rows(table, 2))
    for count in (1, 2):
        for metric in ("insertion_auc", "deletion_auc_zero"):
            for kind in gallery_picks(evaluated, metric, count, 0).values():
                assert set(kind.index) <= rows
    assert {11, 13} <= rows  # p_perturbed / p_original 0.8 and 0.9: flagged
    assert 16 not in rows  # not evaluated, not flagged
    assert picture_rows(table, 0) == []


@pytest.fixture()
def evaluated_run(tmp_path):
    """12 flat-colour images (same mask), evaluated with 1 picture per gallery row."""
    root = tmp_path / "data"
    colours = np.random.default_rng(0).uniform(0.1, 0.9, size=(12, 3))
    rows = []
    for i, colour in enumerate(colours):
        save(root / "n00000000" / f"c{i:02d}.png", np.broadcast_to(colour, (16, 16, 3)))
        rows.append({"path": f"n00000000/c{i:02d}.png", "p_perturbed": 0.4 if i in (3, 7) else 0.1})
    store = tmp_path / "run" / "masks.h5"
    store.parent.mkdir()
    write_store(store, root, rows)
    out = tmp_path / "run"
    config = EvalConfig(step=64, workers=0, gallery=1)
    result = evaluate_store(store, root, tiny_classifier(), out, config=config)
    return out, store, root, colours, result


def _figures(text: str) -> list[tuple[str, str | None]]:
    """(path, JPEG bytes or None) of every gallery/strength figure of a page."""
    found = re.findall(r'<figure class="[a-z]*" data-path="([^"]+)"[^>]*>.*?(?:<img src="data:image/jpeg;base64,'
                       r'([^"]+)"|<div class="missing">)', text)
    return [(path, base64.b64decode(data) if data else None) for path, data in found]


def test_the_report_shows_the_pictures_evaluate_drew_without_the_store_or_the_images(evaluated_run, tmp_path):
    out, store, root, colours, result = evaluated_run
    assert result.paths["thumbnails"] == out / THUMBNAILS_FILE
    drawn = read_thumbnails(out)
    # The store and the images go away: the report needs neither.
    store.rename(tmp_path / "elsewhere.h5")
    shutil.rmtree(root)
    page = write_report([out], tmp_path / "r.html", ReportConfig(n_boot=10, gallery=1)).read_text()
    figures = _figures(page)
    assert len(figures) >= 3 * 3 + 2  # 3 AUC galleries (best, worst, random) and the 2 flagged images
    assert "have no picture" not in page and "galleries show no pictures" not in page
    ramp = colormaps["jet"](np.tile(RAMP, (16, 1)))[..., :3]
    for path, jpeg in figures:
        assert jpeg == drawn[path]
        picture = np.asarray(Image.open(io.BytesIO(jpeg))).astype(float) / 255
        # each image is its own colour with the ramp's heatmap over it, 0.55 / 0.45
        errors = [np.abs(picture - (0.55 * np.round(c * 255) / 255 + 0.45 * ramp)).mean() for c in colours]
        assert int(np.argmin(errors)) == int(path[-6:-4]) and min(errors) < 0.04, path  # JPEG of a 16 px picture
    # More pictures per row than evaluate drew: the others show as missing, with a note.
    page = build_report([out], tmp_path / "r6.html", ReportConfig(n_boot=10, gallery=6))
    figures = _figures(page)
    missing = {path for path, jpeg in figures if jpeg is None}
    assert missing and missing == {path for path, _ in figures} - set(drawn)
    assert f"{len(missing)} images shown have no picture" in page


def test_a_folder_without_thumbnails_gets_a_page_with_a_note(evaluated_run, tmp_path):
    out = evaluated_run[0]
    (out / THUMBNAILS_FILE).unlink()  # as an evaluation written before evaluations drew them
    page = build_report([out], tmp_path / "r.html", ReportConfig(n_boot=10, gallery=1))
    figures = _figures(page)
    assert figures and all(jpeg is None for _, jpeg in figures)
    assert f"no {THUMBNAILS_FILE} in" in page and "galleries show no pictures" in page


def test_the_report_never_opens_the_store(evaluated_run, tmp_path, monkeypatch):
    out, store, root, colours, result = evaluated_run
    import pipeline.store.reader

    def refuse(*args, **kwargs):
        raise AssertionError("the report opened the mask store")

    monkeypatch.setattr(pipeline.store.reader.MaskStore, "__init__", refuse)
    page = write_report([out], tmp_path / "r.html", ReportConfig(n_boot=10, gallery=1)).read_text()
    assert "run_key" in page and "mask store not found" not in page  # provenance from summary.json


def test_thumbnails_draw_the_box_localisation_found_as_evaluate_records_it(tmp_path):
    """A 64 x 128 grey image whose saliency rises left to right: in the original frame column ``x``
    samples input column ``x / 8 - 0.4375`` (bilinear, ``align_corners=False``), so its saliency is
    ``clip(x / 8 - 0.4375, 0, 15) / 15``, from 0 (x <= 3) to 1 (x >= 124). Value threshold 0.1 keeps
    ``x / 8 - 0.4375 >= 1.5``, i.e. x >= 15.5, on every row: the tight box is (16, 0, 127, 63)."""
    root = tmp_path / "data"
    save(root / "n00000000" / "g.png", np.full((64, 128, 3), 0.4))
    store = tmp_path / "s.h5"
    write_store(store, root, [{"path": "n00000000/g.png", "height": 64, "width": 128}])
    boxes = {"g": ImageBoxes(size=(128, 64), boxes=(("n00000000", 0, 0, 40, 30),))}
    out = tmp_path / "run"
    config = EvalConfig(step=64, workers=0, gallery=1, value_alphas=(0.1,), energy_alphas=(), mean_alphas=())
    result = evaluate_store(store, root, tiny_classifier(), out, boxes=boxes, config=config)
    row = pd.read_csv(out / "per_image.csv").iloc[0]
    assert row["loc_status"] == "ok" and row["locbox_setting"] == "value_0.1_tight"
    assert [int(row[c]) for c in ("locbox_xmin", "locbox_ymin", "locbox_xmax", "locbox_ymax")] == [16, 0, 127, 63]
    assert row["locbox_fallback"] == 0.0
    # the recorded box is the one the metric scored: IoU with (0, 0, 40, 30) by hand
    inter = (40 - 16 + 1) * 31
    assert row["iou_value_0.1_tight"] == pytest.approx(inter / (112 * 64 + 41 * 31 - inter))
    picture = np.asarray(Image.open(io.BytesIO(read_thumbnails(out)["n00000000/g.png"]))).astype(int)
    assert picture.shape == (64, 128, 3)

    def magenta(patch):  # JPEG blurs 2-pixel lines: judge the mean colour of a dash
        r, g, b = patch.reshape(-1, 3).mean(axis=0)
        return r > 150 and b > 150 and g < 110

    assert magenta(picture[24:30, 16:18]) and magenta(picture[0:6, 126:128])  # left and right sides, one dash each
    assert magenta(picture[62:64, 28:34])  # bottom side
    assert not magenta(picture[30:36, 70:72]) and not magenta(picture[24:30, 8:10])  # inside, left of the box
    assert picture[10:20, 39:41].mean() > 200  # the ground-truth box's right side, white
    page = build_report([out], tmp_path / "r.html", ReportConfig(n_boot=10, gallery=1))
    assert "dashed magenta = the box localisation found (threshold and box kind value_0.1_tight" in page
    assert result.table["locbox_xmin"].iat[0] == 16
    # An evaluation written before the columns existed still gives a page, with the ground-truth legend only.
    table = pd.read_parquet(out / "per_image.parquet")
    table.drop(columns=[c for c in table if c.startswith("locbox_")]).to_parquet(out / "per_image.parquet")
    page = build_report([out], tmp_path / "old.html", ReportConfig(n_boot=10, gallery=1))
    assert "ground-truth boxes." in page
    assert "dashed magenta" not in page
