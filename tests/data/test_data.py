"""Discovery, robust decoding and batching (pipeline.data), on images made from scikit-image's."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from pipeline.data import decode
from pipeline.data import ImageDataset, ImageRecord, decode_image, discover, load_image, make_loader
from pipeline.errors import ConfigError, ImageReadError

HUGE = 10_000  # side of the huge JPEG: 100 Mpx, above PIL's 89 Mpx bomb warning


def _save(array: np.ndarray, path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def _small(array: np.ndarray, side: int = 32) -> np.ndarray:
    return np.asarray(Image.fromarray(array).resize((side, side)))


# --------------------------------------------------------------------------------------------
# discovery


def test_imagenet_folder_labels_are_model_indices_not_folder_order(tmp_path):
    chelsea = _small(skimage.data.chelsea())
    for wnid in ("n01440764", "n01443537", "n02124075", "not_a_wnid"):
        _save(chelsea, tmp_path / wnid / f"{wnid}_1.JPEG")
    _save(chelsea, tmp_path / "loose.png")

    records = discover(tmp_path)  # default vocabulary: ImageNet-1k in model index order

    assert [(r.relpath, r.label) for r in records] == [
        ("loose.png", -1),
        ("n01440764/n01440764_1.JPEG", 0),
        ("n01443537/n01443537_1.JPEG", 1),
        ("n02124075/n02124075_1.JPEG", 285),  # Egyptian cat, not the 3rd folder present
        ("not_a_wnid/not_a_wnid_1.JPEG", -1),
    ]
    assert all(r.path.is_absolute() and r.path.is_file() for r in records)
    assert [r.relpath for r in discover(tmp_path, limit=2)] == ["loose.png", records[1].relpath]


def test_flat_folder_takes_images_only_sorted_unlabelled(tmp_path):
    coffee = _small(skimage.data.coffee())
    for name in ("b.png", "a.JPG", "c.webp", "d.TIFF"):
        _save(coffee, tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    _save(coffee, tmp_path / ".hidden.png")
    _save(coffee, tmp_path / ".cache" / "x.png")

    records = discover(tmp_path)

    assert [r.relpath for r in records] == ["a.JPG", "b.png", "c.webp", "d.TIFF"]
    assert {r.label for r in records} == {-1}
    assert discover(tmp_path / "b.png") == [ImageRecord(tmp_path / "b.png", "b.png", -1)]


def test_file_list_resolves_relative_paths_and_skips_comments(tmp_path):
    chelsea = _small(skimage.data.chelsea())
    _save(chelsea, tmp_path / "imgs" / "n02124075" / "cat.png")
    _save(chelsea, tmp_path / "imgs" / "plain.png")
    outside = _save(chelsea, tmp_path / "elsewhere" / "abs.png")
    listing = tmp_path / "lists" / "val.txt"
    listing.parent.mkdir()
    listing.write_text(
        "# images to explain\n\n"
        "../imgs/plain.png\n"
        "  ../imgs/n02124075/cat.png  \n"
        f"{outside}\n"
        "../imgs/gone.png\n"
    )

    records = discover(listing)

    by_relpath = {r.relpath: r for r in records}
    assert sorted(by_relpath) == [r.relpath for r in records]
    assert set(by_relpath) == {"../imgs/plain.png", "../imgs/n02124075/cat.png", str(outside),
                               "../imgs/gone.png"}
    assert by_relpath["../imgs/n02124075/cat.png"].label == 285
    assert by_relpath["../imgs/plain.png"].path == tmp_path / "imgs" / "plain.png"
    assert by_relpath["../imgs/plain.png"].label == -1
    # a listed file that does not exist is kept: the dataset records it as skipped
    gone = ImageDataset([by_relpath["../imgs/gone.png"]])[0]
    assert (gone["ok"], gone["reason"]) == (False, "missing")


def test_bad_sources_raise_with_a_sentence(tmp_path):
    with pytest.raises(ImageReadError, match="does not exist"):
        discover(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("no images here")
    with pytest.raises(ImageReadError, match="holds no images"):
        discover(tmp_path / "empty")
    comments = tmp_path / "comments.txt"
    comments.write_text("# nothing\n\n")
    with pytest.raises(ImageReadError, match="names no images"):
        discover(comments)
    twice = tmp_path / "twice.txt"
    twice.write_text("a.png\nb.png\na.png\n")
    with pytest.raises(ConfigError, match="lines 1 and 3"):
        discover(twice)
    with pytest.raises(ConfigError, match="limit"):
        discover(comments, limit=0)


# --------------------------------------------------------------------------------------------
# one folder holding every awkward input


def _build_zoo(root: Path) -> None:
    chelsea = skimage.data.chelsea()
    jpeg = _save(chelsea, root / "truncated.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "empty.jpg").write_bytes(b"")
    (root / "text.jpg").write_text("this is not a JPEG\n")
    os.symlink(root / "does-not-exist.png", root / "dangling.png")
    _save(skimage.data.camera(), root / "grey.png")
    _save(_small(chelsea, 64), root / "rgb.png")
    Image.fromarray(_small(chelsea, 64)).convert("CMYK").save(root / "cmyk.jpg", quality=95)
    rgba = np.zeros((8, 8, 4), np.uint8)  # top half opaque red, bottom half transparent black
    rgba[:4, :, 0], rgba[:4, :, 3] = 255, 255
    _save(rgba, root / "rgba.png")
    palette = Image.new("P", (8, 8), 0)  # index 0 transparent, index 1 blue in the top half
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.paste(1, (0, 0, 8, 4))
    palette.save(root / "palette.png", transparency=0)
    sixteen = np.full((40, 40), 65535, np.uint16)
    sixteen[:, 20:] = 32768
    _save(sixteen, root / "sixteen.png")
    _save(np.full((5, 5, 3), 77, np.uint8), root / "tiny.png")
    Image.new("RGB", (HUGE, HUGE), (200, 100, 50)).save(root / "huge.jpg", quality=90)


# name -> (ok, reason); every file of the zoo is here
EXPECTED = {
    "cmyk.jpg": (True, ""),
    "dangling.png": (False, "missing"),
    "empty.jpg": (False, "empty file"),
    "grey.png": (True, ""),
    "huge.jpg": (True, ""),
    "palette.png": (True, ""),
    "rgb.png": (True, ""),
    "rgba.png": (True, ""),
    "sixteen.png": (True, ""),
    "text.jpg": (False, "not an image"),
    "tiny.png": (True, ""),
    "truncated.jpg": (False, "truncated"),
}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("zoo")
    _build_zoo(root)
    return root


@pytest.fixture(scope="module")
def zoo_items(zoo) -> dict[str, dict]:
    dataset = ImageDataset(discover(zoo))
    return {record.relpath: dataset[i] for i, record in enumerate(dataset.records)}


def test_zoo_is_fully_discovered(zoo):
    assert [r.relpath for r in discover(zoo)] == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_awkward_input_is_processed_or_flagged(zoo_items, name):
    item = zoo_items[name]
    assert (item["ok"], item["reason"]) == EXPECTED[name]
    assert item["image"].shape == (3, 224, 224) and item["image"].dtype == torch.float32
    assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
    if not item["ok"]:
        assert float(item["image"].abs().sum()) == 0.0
        assert (item["height"], item["width"]) == (0, 0)


@pytest.mark.parametrize("name", [n for n, (ok, _) in EXPECTED.items() if not ok])
def test_load_image_raises_image_read_error_with_reason(zoo, name):
    with pytest.raises(ImageReadError) as caught:
        load_image(zoo / name)
    assert caught.value.reason == EXPECTED[name][1]
    assert name in str(caught.value)


def test_greyscale_becomes_three_equal_channels(zoo, zoo_items):
    pixels = load_image(zoo / "grey.png")
    assert pixels.shape == (512, 512, 3) and pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels[..., 0], skimage.data.camera())
    np.testing.assert_array_equal(pixels[..., 1], pixels[..., 2])
    image = zoo_items["grey.png"]["image"]
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


def test_cmyk_jpeg_converts_to_rgb_close_to_the_original(zoo):
    cmyk, rgb = load_image(zoo / "cmyk.jpg"), load_image(zoo / "rgb.png")
    assert cmyk.shape == rgb.shape == (64, 64, 3)
    assert np.abs(cmyk.astype(int) - rgb.astype(int)).mean() < 6  # JPEG loss only


def test_transparency_is_composited_on_white(zoo):
    rgba = load_image(zoo / "rgba.png")
    np.testing.assert_array_equal(rgba[:4].reshape(-1, 3), [[255, 0, 0]] * 32)
    np.testing.assert_array_equal(rgba[4:].reshape(-1, 3), [[255, 255, 255]] * 32)
    palette = load_image(zoo / "palette.png")
    np.testing.assert_array_equal(palette[:4].reshape(-1, 3), [[0, 0, 255]] * 32)
    np.testing.assert_array_equal(palette[4:].reshape(-1, 3), [[255, 255, 255]] * 32)


def test_sixteen_bit_png_is_scaled_not_clipped(zoo, zoo_items):
    with Image.open(zoo / "sixteen.png") as img:
        assert img.mode.startswith("I")  # PIL's convert("RGB") would clip all of it to white
    pixels = load_image(zoo / "sixteen.png")
    assert set(np.unique(pixels[:, :20]).tolist()) == {255}
    assert set(np.unique(pixels[:, 20:]).tolist()) == {128}  # round(32768 / 257)
    image = zoo_items["sixteen.png"]["image"]
    assert float(image[:, :, :100].min()) == 1.0
    assert float(image[:, :, 124:].max()) == pytest.approx(32768 / 65535, abs=2e-3)


def test_tiny_image_is_resized_up(zoo_items):
    item = zoo_items["tiny.png"]
    assert (item["height"], item["width"]) == (5, 5)
    assert torch.allclose(item["image"], torch.full((3, 224, 224), 77 / 255))


def test_huge_jpeg_decodes_at_reduced_scale_without_bomb_errors(zoo, zoo_items):
    limit = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning would fail here
        pixels, original = decode_image(zoo / "huge.jpg", draft_size=(448, 448))
    assert original == (HUGE, HUGE)
    assert pixels.shape == (HUGE // 8, HUGE // 8, 3)  # libjpeg's 1/8 scale, still >= 448
    assert np.abs(pixels.reshape(-1, 3).mean(0) - [200, 100, 50]).max() < 3
    assert Image.MAX_IMAGE_PIXELS == limit  # PIL's global is restored
    item = zoo_items["huge.jpg"]
    assert (item["height"], item["width"], item["ok"]) == (HUGE, HUGE, True)
    expected = torch.tensor([200, 100, 50]).view(3, 1, 1) / 255
    assert (item["image"] - expected).abs().max() < 3 / 255


def test_more_decoded_pixels_than_the_limit_is_too_large(zoo, monkeypatch):
    monkeypatch.setattr(decode, "MAX_DECODED_PIXELS", 1000)  # the module that reads it
    with pytest.raises(ImageReadError, match="MAX_DECODED_PIXELS") as caught:
        decode_image(zoo / "huge.jpg", draft_size=(448, 448))
    assert caught.value.reason == "too large"
    item = ImageDataset([ImageRecord(zoo / "rgb.png", "rgb.png")])[0]
    assert (item["ok"], item["reason"]) == (False, "too large")


def test_resize_is_pil_bilinear_without_crop(zoo, zoo_items):
    pixels = load_image(zoo / "rgb.png")
    expected = np.asarray(Image.fromarray(pixels).resize((224, 224), Image.Resampling.BILINEAR))
    image = zoo_items["rgb.png"]["image"]
    np.testing.assert_allclose(image.permute(1, 2, 0).numpy(), expected / 255.0, atol=1e-6)
    wide = ImageDataset([ImageRecord(zoo / "rgb.png", "rgb.png", 3)], size=(100, 50))[0]
    assert wide["image"].shape == (3, 100, 50) and wide["label"] == 3 and wide["index"] == 0


# --------------------------------------------------------------------------------------------
# loader


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_yields_every_index_once(zoo, workers):
    dataset = ImageDataset(discover(zoo))
    seen, reasons = [], {}
    for batch in make_loader(dataset, batch_size=5, workers=workers, pin_memory=False):
        assert batch["image"].shape == (len(batch["index"]), 3, 224, 224)
        assert batch["image"].dtype == torch.float32
        for key in ("index", "height", "width", "label"):
            assert batch[key].dtype == torch.int64
        assert batch["ok"].dtype == torch.bool
        seen += batch["index"].tolist()
        reasons.update(zip(batch["index"].tolist(), batch["reason"]))
    assert sorted(seen) == list(range(len(dataset)))
    names = [r.relpath for r in dataset.records]
    assert {names[i]: reason for i, reason in reasons.items()} == {
        n: reason for n, (_, reason) in EXPECTED.items()
    }


def test_stop_workers_ends_the_decoding_processes_mid_iteration(zoo):
    import multiprocessing

    from pipeline.data import stop_workers

    loader = make_loader(ImageDataset(discover(zoo), size=32), batch_size=1, workers=2, pin_memory=False)
    batches = iter(loader)
    next(batches)  # the workers run, with batches prefetched
    assert len(multiprocessing.active_children()) >= 2
    stop_workers(loader)
    assert not multiprocessing.active_children()
    stop_workers(make_loader(ImageDataset(discover(zoo), size=32), batch_size=1, workers=0))  # no workers: nothing


def test_loader_subset_keeps_order_and_original_indices(zoo):
    dataset = ImageDataset(discover(zoo), size=32)
    batches = list(make_loader(dataset, batch_size=2, workers=0, indices=[7, 2, 9]))
    assert [b["index"].tolist() for b in batches] == [[7, 2], [9]]
    with pytest.raises(ConfigError, match="out of range"):
        make_loader(dataset, batch_size=2, workers=0, indices=[len(dataset)])
    with pytest.raises(ConfigError, match="batch_size"):
        make_loader(dataset, batch_size=0)
    with pytest.raises(ConfigError, match="size"):
        ImageDataset(dataset.records, size=(0, 224))
