import pytest
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.store import MaskStore

from tests.helpers.images import sample

runner = CliRunner()


def test_explain_writes_the_four_pictures_and_reports(tmp_path):
    image = tmp_path / "chelsea.png"
    Image.fromarray(sample("chelsea")).save(image)
    out = tmp_path / "out"
    result = runner.invoke(app, ["explain", str(image), "--iterations", "3", "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    for name in ("heatmap", "mask", "cam", "perturbated"):
        picture = Image.open(out / f"{name}.png")
        assert picture.size == (337, 224)  # chelsea is 451 x 300: its aspect ratio, 224 on the short side
    assert "Egyptian cat" in result.output
    for line in ("p original", "p perturbed", "p final"):
        assert line in result.output


def test_explain_and_masks_give_one_image_the_same_input(tmp_path):
    # Both commands read a file through pipeline.data.read_input (JPEG draft decoding, then one
    # resize), so the model sees the same pixels: the same probability before any perturbation.
    folder = tmp_path / "images" / "n02124075"
    folder.mkdir(parents=True)
    image = folder / "chelsea.jpg"
    big = Image.fromarray(sample("chelsea")).resize((1804, 1200))  # large enough for draft decoding
    big.save(image, quality=90)
    explained = runner.invoke(app, ["explain", str(image), "-n", "1", "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert explained.exit_code == 0, explained.output
    p_explain = float(next(line for line in explained.output.splitlines() if line.startswith("p original")).split()[2])
    store = tmp_path / "m.h5"
    solved = runner.invoke(app, ["masks", str(tmp_path / "images"), "--out", str(store), "-n", "1", "--workers", "0",
                                 "--device", "cpu"])
    assert solved.exit_code == 0, solved.output
    with MaskStore(store) as opened:
        p_masks = float(opened.column("p_original")[0])
    assert p_explain == pytest.approx(p_masks, abs=1e-4)


def test_explain_with_named_target(tmp_path):
    image = tmp_path / "chelsea.png"
    Image.fromarray(sample("chelsea")).save(image)
    result = runner.invoke(app, ["explain", str(image), "-n", "1", "--target", "tabby", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "281 n02123045 tabby" in result.output


@pytest.mark.parametrize("picture, arguments, says", [
    ("nope.jpg", ["-n", "1"], ["nope.jpg"]),  # no such file
    ("notes.jpg", ["-n", "1"], ["notes.jpg"]),  # a text file
    ("chelsea.png", ["--model", "alexnett"], ["unknown model 'alexnett'", "perturb models"]),
    ("chelsea.png", ["--target", "egyptian kat"], ["egyptian cat"]),  # suggests the close name
])
def test_bad_input_is_one_clear_line(tmp_path, picture, arguments, says):
    image = tmp_path / picture
    if picture == "notes.jpg":
        image.write_text("this is not a picture")
    elif picture == "chelsea.png":
        Image.fromarray(sample("chelsea")).save(image)
    result = runner.invoke(app, ["explain", str(image), *arguments])
    assert result.exit_code == 1
    assert "error:" in result.output and "Traceback" not in result.output
    assert all(text in result.output for text in says), result.output


def test_models_and_presets_list():
    assert "efficientnet_lite0" in runner.invoke(app, ["models"]).output
    listing = runner.invoke(app, ["presets"]).output
    for name in ("jacobgil", "jacobgil-code", "paper", "paper-loc", "extremal"):
        assert name in listing
