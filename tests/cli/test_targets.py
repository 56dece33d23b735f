"""`--targets FILE.csv` through the real command line: the class of each image comes from the CSV
(stored in the `target` column that evaluate uses), and a bad CSV is one error line before the
model loads, leaving no store."""

import pytest
import skimage.data
from PIL import Image
from typer.testing import CliRunner

import pipeline as pp
from pipeline.data.targets import read_targets
from pipeline.cli import app
from pipeline.errors import ConfigError
from pipeline.imagenet import imagenet_vocabulary
from pipeline.jobs.run import RunConfig

runner = CliRunner()
# Classes the model would not pick for these pictures (a cat, a cup): tench and goldfish.
CSV_WNIDS = {"n02124075/chelsea.png": "n01440764", "n07920052/coffee.png": "n01443537"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    for relpath, pixels in (("n02124075/chelsea.png", skimage.data.chelsea()),
                            ("n07920052/coffee.png", skimage.data.coffee())):
        (root / relpath).parent.mkdir()
        Image.fromarray(pixels[::2, ::2]).save(root / relpath)
    return root


def write_csv(path, rows):
    path.write_text("path,class\n" + "".join(f"{p},{c}\n" for p, c in rows))
    return path


def stored_targets(store_path):
    with pp.MaskStore(store_path) as store:
        table = store.table().set_index("path")
        return {p: int(t) for p, t in table["target"].items()}, store.config


@pytest.mark.parametrize("command", [["masks", "{data}", "-n", "1", "-b", "2"], ["baseline", "random", "{data}"]])
def test_targets_csv_gives_the_stored_target(data, tmp_path, command):
    csv = write_csv(tmp_path / "targets.csv", CSV_WNIDS.items())
    out = tmp_path / "store.h5"
    args = [a.format(data=data) for a in command]
    made = runner.invoke(app, [*args, "--out", str(out), "--targets", str(csv), "--workers", "0", "--device", "cpu"])
    assert made.exit_code == 0, made.output
    vocabulary = imagenet_vocabulary()
    targets, config = stored_targets(out)
    assert targets == {p: vocabulary.resolve(w) for p, w in CSV_WNIDS.items()}
    assert config["target"] == "file" and len(config["targets"]["sha256"]) == 64
    # The same classes written as indices are the same run (resumed); other classes are another run.
    same = write_csv(tmp_path / "same.csv", [(p, vocabulary.resolve(w)) for p, w in CSV_WNIDS.items()])
    again = runner.invoke(app, [*args, "--out", str(out), "--targets", str(same), "--workers", "0",
                                   "--device", "cpu"])
    assert again.exit_code == 0 and "0 solved now, 2 already done" in again.output, again.output
    other = write_csv(tmp_path / "other.csv", [(p, "goldfish") for p in CSV_WNIDS])
    refused = runner.invoke(app, [*args, "--out", str(out), "--targets", str(other), "--workers", "0",
                                     "--device", "cpu"])
    assert refused.exit_code == 1 and refused.output.startswith("error: "), refused.output


BAD = {
    "image without a row": ([("n02124075/chelsea.png", "n01440764")],
                            "1 image has no row: n07920052/coffee.png"),
    "row without an image": ([*CSV_WNIDS.items(), ("n01440764/gone.png", "tench")],
                             "1 row names no image: n01440764/gone.png (line 4)"),
    "unknown class": ([("n02124075/chelsea.png", "tenchh"), ("n07920052/coffee.png", "n99999999")],
                      "2 unknown classes: 'tenchh' (line 2; did you mean 'tench'?), 'n99999999' (line 3)"),
}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("command", ["masks", "baseline", "sweep"])
def test_bad_targets_csv_is_one_line(data, tmp_path, case, command, monkeypatch):
    import pipeline.models

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the targets file was checked")

    monkeypatch.setattr(pipeline.models, "load_model", no_model)
    rows, message = BAD[case]
    csv = write_csv(tmp_path / "bad.csv", rows)
    out = tmp_path / "out"
    args = {"masks": ["masks", str(data), "--out", str(out / "m.h5")],
            "baseline": ["baseline", "centre", str(data), "--out", str(out / "b.h5")],
            "sweep": ["sweep", str(data), "-p", "jacobgil", "--out", str(out)]}[command]
    bad = runner.invoke(app, [*args, "--targets", str(csv), "--workers", "0", "--device", "cpu"])
    assert bad.exit_code == 1
    lines = bad.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: targets file ") and message in lines[0], bad.output
    assert not out.exists()


def test_read_targets_checks_only_the_limited_images_and_refuses_label(data, tmp_path):
    csv = write_csv(tmp_path / "one.csv", [("n02124075/chelsea.png", "0")])
    with pytest.raises(ConfigError, match="no row: n07920052/coffee.png"):
        read_targets(csv, data)
    table = read_targets(csv, data, limit=1)  # chelsea sorts first
    assert dict(table.classes) == {"n02124075/chelsea.png": 0}
    with pytest.raises(ConfigError, match="--targets and --target label"):
        RunConfig(target="label", targets=table)
    no_header = tmp_path / "plain.csv"
    no_header.write_text("n02124075/chelsea.png,0\n")
    with pytest.raises(ConfigError, match="columns path,class"):
        read_targets(no_header, data)
