"""import_maps: another tool's saliency maps become a store that evaluate reads; the round trip gives
the gradient baseline's numbers; every bad map is a skipped row with its reason, every bad MAPS one error."""

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import Saliency
from PIL import Image
from torch import nn

import pipeline as pp
from pipeline.data import read_input
from pipeline.data.maps import MapReadError, open_maps
from pipeline.errors import ConfigError
from pipeline.jobs.importing import ImportSummary, prepare_map
from pipeline.metrics import pixel_order
from pipeline.models import IMAGENET_MEAN, IMAGENET_STD, frozen

SIZE = (16, 16)
WNIDS = ("n00000000", "n00000001", "n00000002")
IMAGES = {"n00000000/a.png": (20, 30), "n00000001/b.png": (24, 24), "c.png": (30, 20), "d.png": (16, 16)}
AUCS = ["deletion_auc_zero", "deletion_auc_blur", "insertion_auc"]
EVAL = pp.EvalConfig(step=32, workers=0, plots=False)
RUN = pp.RunConfig(batch_size=2, workers=0, progress=False)


def block_classifier() -> pp.Classifier:
    """Mean over 4 x 4 blocks, then a linear layer: the gradient is constant on each block, so a map
    has 16 levels per channel (what makes a 16-bit PNG of it lossless for the metrics, below)."""
    generator = torch.Generator().manual_seed(0)
    module = nn.Sequential(nn.AvgPool2d(4), nn.Flatten(), nn.Linear(3 * 16, 3))
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    vocabulary = pp.ClassVocabulary(wnids=WNIDS, names=("a", "b", "c"))
    return pp.Classifier(frozen(module), "blocks", SIZE, IMAGENET_MEAN, IMAGENET_STD, vocabulary)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Four random RGB images, (height, width) as in IMAGES, two in wnid folders."""
    root = tmp_path_factory.mktemp("data")
    for i, (relpath, (height, width)) in enumerate(IMAGES.items()):
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(i).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / relpath)
    return root


def captum_maps(data, classifier) -> dict[str, np.ndarray]:
    """Captum's Saliency of the softmax (|d p / d x| per channel, (3, H, W)) of each image, computed in
    the batches of RUN as the gradient baseline computes them (a CPU rounds per batch size)."""
    paths = sorted(IMAGES)
    x = classifier.normalize(torch.stack([read_input(data / p, SIZE)[0] for p in paths]))
    saliency = Saliency(lambda inputs: classifier.module(inputs).float().softmax(1))
    maps = {}
    for start in range(0, len(paths), RUN.batch_size):
        batch = x[start:start + RUN.batch_size]
        with torch.no_grad():
            targets = classifier(batch).argmax(1)
        grads = saliency.attribute(batch.clone().requires_grad_(True), target=targets, abs=True)
        maps.update({p: g.numpy() for p, g in zip(paths[start:], grads)})
    return maps


def stem(relpath: str) -> str:
    return relpath.rsplit(".", 1)[0]


def read_rows(store, paths):
    """A store's rows, masks (k, 1, H, W) and saliency (k, 1, H, W) for ``paths``, in that order."""
    rows = [store.row_of_path(p) for p in paths]
    return store.table().iloc[rows].set_index("path"), store.masks(rows), pp.store_saliency(store, rows, SIZE)


def evaluated(store, classifier, out):
    result = pp.evaluate_store(store, None, classifier, out, config=EVAL)
    return result.table.set_index("path").sort_index()


def test_round_trip_gives_the_gradient_baselines_numbers(data, tmp_path):
    classifier = block_classifier()
    pp.run_baseline("gradient", data, tmp_path / "gradient.h5", classifier, RUN)
    reference = evaluated(tmp_path / "gradient.h5", classifier, tmp_path / "eval-gradient")
    maps = captum_maps(data, classifier)

    # .npy files named like the images (one channels-last: the channel axis is found either way)
    for relpath, values in maps.items():
        target = tmp_path / "npy" / f"{stem(relpath)}.npy"
        target.parent.mkdir(parents=True, exist_ok=True)
        np.save(target, values.transpose(1, 2, 0) if relpath == "c.png" else values)
    # one .npz keyed by the relative path with its extension
    np.savez(tmp_path / "maps.npz", **maps)
    # HDF5: a path column and a maps dataset
    with h5py.File(tmp_path / "maps.h5", "w") as file:
        file.create_dataset("path", data=[stem(p) for p in maps], dtype=h5py.string_dtype())
        file["maps"] = np.stack(list(maps.values()))
    # 16-bit PNGs of the channel maximum, min-max scaled to 0..65535
    for relpath, values in maps.items():
        heat = values.max(0)
        level = np.round((heat - heat.min()) / (heat.max() - heat.min()) * 65535).astype(np.uint16)
        target = tmp_path / "png" / f"{stem(relpath)}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(level).save(target)

    paths = sorted(IMAGES)
    with pp.MaskStore(tmp_path / "gradient.h5") as store:
        base_table, base_masks, base_heat = read_rows(store, paths)
    for source in ("npy", "maps.npz", "maps.h5", "png"):
        out = tmp_path / f"{source}.h5"
        summary = pp.import_maps(tmp_path / source, data, out, classifier, method="captum-saliency", run=RUN)
        assert (summary.solved, summary.unmatched, dict(summary.skipped)) == (4, [], {}), source
        table = evaluated(out, classifier, tmp_path / f"eval-{source}")
        # The same per-image deletion and insertion numbers as the baseline evaluated directly.
        np.testing.assert_allclose(table[AUCS].to_numpy(), reference[AUCS].to_numpy(), rtol=0, atol=1e-6)
        with pp.MaskStore(out) as store:
            rows, masks, heat = read_rows(store, paths)
        for column in ("target", "p_original", "area"):
            tolerance = 1e-5 if column == "area" and source == "png" else 0  # the mean of rounded values
            np.testing.assert_allclose(rows[column].to_numpy(), base_table[column].to_numpy(), rtol=0,
                                       atol=tolerance, err_msg=f"{source} {column}")
        if source != "png":  # float32 maps: the very masks the baseline stored
            assert torch.equal(masks, base_masks)
        else:
            # A 16-bit PNG rounds each value to 1/65535. Deletion and insertion depend on the pixels'
            # order only; these maps have 16 levels far more than 1/65535 apart, so the order, ties
            # included, survives the rounding, and with it every number. (A map with values closer
            # than 1/65535 would lose that order: use .npy for exact float maps.)
            for i in range(len(heat)):
                assert torch.equal(pixel_order(heat[i:i + 1]), pixel_order(base_heat[i:i + 1]))
            assert float((masks - base_masks).abs().max()) <= 2**-11  # float16 steps below 1
    with pp.MaskStore(tmp_path / "npy.h5") as store:
        assert store.config == {
            "method": "captum-saliency", "model": "blocks", "target": "top1", "input_size": [16, 16],
            "import": {"source": str((tmp_path / "npy").resolve()), "format": "folder", "sign": "abs",
                       "channels": "max", "resize": store.config["import"]["resize"],
                       "normalise": store.config["import"]["normalise"]}}
        assert store.table()["map_height"].tolist() == [16.0] * 4


def test_bad_maps_are_skipped_rows_with_their_reason(data, tmp_path):
    classifier = block_classifier()
    maps = tmp_path / "maps"
    (maps / "n00000000").mkdir(parents=True)
    (maps / "n00000001").mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.save(maps / "n00000000" / "a.npy", rng.uniform(size=(40, 60)).astype(np.float32))  # twice the image: fine
    np.save(maps / "n00000001" / "b.npy", np.full((24, 24), np.nan, np.float32))  # NaN
    np.save(maps / "c.npy", rng.uniform(size=(20, 30)))  # c is 30 x 20 (portrait): a transposed map
    (maps / "d.npy").write_text("not an array")  # a non-array file
    np.save(maps / "zz.npy", rng.uniform(size=(16, 16)))  # no image zz
    (maps / "README.txt").write_text("maps of my method")  # not a map: ignored, counted
    summary = pp.import_maps(maps, data, tmp_path / "bad.h5", classifier, method="mine", run=RUN)
    assert isinstance(summary, ImportSummary)
    assert (summary.total, summary.solved) == (4, 1)
    assert dict(summary.skipped) == {"map not finite": 1, "map shape": 1, "map unreadable": 1}
    assert summary.unmatched == ["zz"] and summary.ignored == 1
    text = "\n".join(summary.lines())
    assert "1 maps without an image (not imported): zz" in text and "1 files in the maps folder" in text
    assert "skipped c.png: a 20 x 30 map fits neither the model input 16 x 16 nor the image 30 x 20" in text
    with pp.MaskStore(tmp_path / "bad.h5") as store:
        table = store.table().set_index("path")
        assert table.loc["n00000000/a.png", ["status", "map_height", "map_width"]].tolist() == ["ok", 40.0, 60.0]
        assert table.loc["d.png", "reason"] == "map unreadable"
        assert torch.isnan(store.masks([store.row_of_path("c.png")])).all()
    # an image without a map; resuming keeps every row and reads no map twice
    (maps / "d.npy").unlink()
    again = pp.import_maps(maps, data, tmp_path / "bad.h5", classifier, method="mine", run=RUN)
    assert (again.solved, again.resumed) == (0, 4)
    fresh = pp.import_maps(maps, data, tmp_path / "fresh.h5", classifier, method="mine", run=RUN)
    assert dict(fresh.skipped)["no map"] == 1
    # targets from the folder's labels: the flat images have none
    labelled = pp.import_maps(tmp_path / "maps", data, tmp_path / "label.h5", classifier, method="mine",
                              run=pp.RunConfig(batch_size=2, workers=0, progress=False, target="label"))
    assert labelled.solved == 1
    with pp.MaskStore(tmp_path / "label.h5") as store:
        assert store.table().set_index("path").loc["n00000000/a.png", "target"] == 0


def test_unusable_maps_give_one_error_before_the_model_loads(data, tmp_path):
    unloadable = "torchvision:no_such_model"  # loading it would fail: these errors must come first
    npz = tmp_path / "bad.npz"
    npz.write_bytes(b"not a zip")
    no_columns = tmp_path / "other.h5"
    with h5py.File(no_columns, "w") as file:
        file["mask"] = np.zeros((2, 4, 4))
    twice = tmp_path / "twice"
    twice.mkdir()
    np.save(twice / "d.npy", np.zeros((4, 4)))
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(twice / "d.png")
    listing = tmp_path / "maps.csv"
    listing.write_text("path,map\n")
    claimed = tmp_path / "claimed"
    claimed.mkdir()
    np.save(claimed / "d.npy", np.zeros((4, 4)))
    np.save(claimed / "d.png.npy", np.zeros((4, 4)))
    cases = {tmp_path / "missing": "do not exist", npz: "not an .npz archive", no_columns: "needs datasets 'path'",
             twice: "two maps for 'd'", claimed: "'d.png' has two maps", listing: "must be a folder of .npy or .png"}
    for maps, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            pp.import_maps(maps, data, tmp_path / "out.h5", unloadable, method="mine")
    with pytest.raises(ConfigError, match="sign must be one of 'abs', 'positive', 'raw'"):
        pp.import_maps(twice, data, tmp_path / "out.h5", unloadable, method="mine", sign="absolute")
    with pytest.raises(ConfigError, match="method must be a non-empty name"):
        pp.import_maps(twice, data, tmp_path / "out.h5", unloadable, method=" ")
    assert not (tmp_path / "out.h5").exists()


def test_prepare_map_by_hand():
    signed = np.array([[-2.0, 1.0], [3.0, -4.0]], np.float32)
    cases = {"abs": [[2, 1], [3, 4]], "positive": [[0, 1], [3, 0]], "raw": [[-2, 1], [3, -4]]}
    for sign, expected in cases.items():
        got = prepare_map(signed, (2, 2), (2, 2), sign, "max")
        assert got.map.tolist() == expected and (got.height, got.width) == (2, 2)
    channels = np.stack([signed, -signed, np.ones_like(signed)])  # (3, 2, 2)
    assert prepare_map(channels, (2, 2), (2, 2), "raw", "max").map.tolist() == [[2, 1], [3, 4]]
    assert prepare_map(channels, (2, 2), (2, 2), "abs", "sum").map.tolist() == [[5, 3], [7, 9]]
    mean = prepare_map(channels, (2, 2), (2, 2), "positive", "mean").map
    assert mean.flatten().tolist() == pytest.approx([1, 2 / 3, 4 / 3, 5 / 3], rel=1e-6)
    last = prepare_map(channels.transpose(1, 2, 0), (2, 2), (2, 2), "abs", "sum").map
    batched = prepare_map(channels[None], (2, 2), (2, 2), "abs", "sum").map  # (1, 3, h, w)
    assert last.tolist() == batched.tolist() == [[5, 3], [7, 9]]
    assert prepare_map(np.arange(4, dtype=np.int16).reshape(2, 2), (2, 2), (2, 2), "abs", "max").map.tolist() \
        == [[0, 1], [2, 3]]
    # another resolution is resized bilinearly to the model input (antialiased when shrinking)
    large = np.random.default_rng(0).uniform(size=(8, 12)).astype(np.float32)
    resized = prepare_map(large, (4, 6), (100, 150), "abs", "max")
    reference = F.interpolate(torch.from_numpy(large)[None, None], size=(4, 6), mode="bilinear",
                              align_corners=False, antialias=True)[0, 0]
    assert torch.equal(resized.map, reference) and (resized.height, resized.width) == (8, 12)
    assert prepare_map(large[:7], (4, 4), (70, 120), "abs", "max").map.shape == (4, 4)  # 7 x 12 ~ 70 x 120
    refused = {"map shape": [np.zeros((2, 4, 4)), np.zeros((2, 3, 4, 4)), np.zeros(4), np.zeros((12, 8))],
               "map not finite": [np.array([[np.inf, 0], [0, 0]]), np.full((2, 2), 1e300)],
               "map unreadable": [np.zeros((2, 2), complex), np.array([["a", "b"], ["c", "d"]])]}
    for reason, arrays in refused.items():
        for array in arrays:
            with pytest.raises(MapReadError) as caught:
                prepare_map(array, (8, 12), (8, 12), "abs", "max")
            assert caught.value.reason == reason, array


def test_png_maps_of_8_and_16_bits_read_as_stored(tmp_path):
    levels8 = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    levels16 = np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000
    (tmp_path / "sub").mkdir()
    Image.fromarray(levels8).save(tmp_path / "sub" / "eight.png")
    Image.fromarray(levels16).save(tmp_path / "sixteen.PNG")
    Image.fromarray(np.zeros((3, 4, 3), np.uint8)).save(tmp_path / "colour.png")
    with open_maps(tmp_path) as source:
        assert source.keys == ["colour", "sixteen", "sub/eight"]
        assert np.array_equal(source.read("sub/eight"), levels8)
        assert np.array_equal(source.read("sixteen"), levels16)
        with pytest.raises(MapReadError, match="colour.*greyscale") as caught:
            source.read("colour")
        assert caught.value.reason == "map unreadable"
