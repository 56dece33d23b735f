"""`perturb import` through the real command line: maps in, a store that `perturb evaluate` reads out;
a bad MAPS is one error line and leaves no store."""

import numpy as np
import skimage.data
from PIL import Image
from typer.testing import CliRunner

import pipeline as pp
from pipeline.cli import app

runner = CliRunner()
INPUT = (224, 224)  # efficientnet_lite0's input size


def make_folder(root):
    """Three scikit-image pictures in their ImageNet class folders."""
    for wnid, name, pixels in (("n02124075", "chelsea", skimage.data.chelsea()),
                               ("n07920052", "coffee", skimage.data.coffee()),
                               ("n03792782", "astronaut", skimage.data.astronaut())):
        (root / wnid).mkdir(parents=True)
        Image.fromarray(pixels).save(root / wnid / f"{name}.png")
    return root


def test_import_then_evaluate(tmp_path):
    data = make_folder(tmp_path / "data")
    maps = tmp_path / "maps"
    rng = np.random.default_rng(0)
    at_input = rng.normal(size=INPUT).astype(np.float32)  # signed, at the model input: no resize
    (maps / "n02124075").mkdir(parents=True)
    np.save(maps / "n02124075" / "chelsea.npy", at_input)
    (maps / "n07920052").mkdir()
    np.save(maps / "n07920052" / "coffee.npy", rng.random((3, 7, 7)))  # a 7 x 7 CAM with channels
    np.save(maps / "stray.npy", rng.random(INPUT))  # no image of that name; astronaut has no map
    out = tmp_path / "imported.h5"
    made = runner.invoke(app, ["import", str(maps), "--data", str(data), "--out", str(out), "--method", "noise",
                               "--sign", "positive", "-b", "2", "--workers", "0", "--device", "cpu"])
    assert made.exit_code == 0, made.output
    assert "3 images; 2 solved now" in made.output
    assert "skipped: 1 no map" in made.output
    assert "1 maps without an image (not imported): stray" in made.output
    with pp.MaskStore(out) as store:
        assert store.config["method"] == "noise" and store.config["import"]["sign"] == "positive"
        row = store.row_of_path("n02124075/chelsea.png")
        positive = np.maximum(at_input, 0)
        expected = (positive - positive.min()) / (positive.max() - positive.min())
        np.testing.assert_allclose(store.masks([row])[0, 0].numpy(), 1 - expected, atol=5e-4)  # stored as float16
    evaluated = runner.invoke(app, ["evaluate", str(out), "--out", str(tmp_path / "eval"), "--step", "12544",
                                    "--workers", "0", "--device", "cpu"])
    assert evaluated.exit_code == 0, evaluated.output
    assert "insertion_auc" in evaluated.output


def test_missing_maps_is_one_error_line(tmp_path):
    data = make_folder(tmp_path / "data")
    out = tmp_path / "imported.h5"
    bad = runner.invoke(app, ["import", str(tmp_path / "nowhere"), "--data", str(data), "--out", str(out),
                              "--method", "noise", "--workers", "0", "--device", "cpu"])
    assert bad.exit_code == 1
    lines = bad.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nowhere" in lines[0], bad.output
    assert not out.exists()
