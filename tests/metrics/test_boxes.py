"""Ground-truth box readers on small files written by the tests."""

from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.metrics import ImageBoxes, load_boxes, read_kaggle_csv, read_voc_folder
from tests.helpers.boxes import voc_xml

REAL_BBOX = Path("/work/shared/data/imagenet-val-100/bbox")


@pytest.fixture
def voc_folder(tmp_path):
    folder = tmp_path / "bbox"
    folder.mkdir()
    (folder / "ILSVRC2012_val_00000002.xml").write_text(
        voc_xml(500, 375, [("n01440764", 10, 20, 110, 220), ("n02102040", 0, 0, 499, 374),
                           ("n01440764", 300, 30, 400, 130)])
    )
    (folder / "ILSVRC2012_val_00000001.xml").write_text(
        voc_xml(496, 368, [("n01751748", 111, 108, 441, 193)])
    )
    (folder / "notes.txt").write_text("not an annotation")
    return folder


def test_read_voc_folder(voc_folder):
    boxes = read_voc_folder(voc_folder)
    assert list(boxes) == ["ILSVRC2012_val_00000001", "ILSVRC2012_val_00000002"]
    first = boxes["ILSVRC2012_val_00000001"]
    assert first == ImageBoxes(size=(496, 368), boxes=(("n01751748", 111, 108, 441, 193),))
    second = boxes["ILSVRC2012_val_00000002"]
    assert second.size == (500, 375)  # (width, height)
    assert second.wnids == {"n01440764", "n02102040"}
    fish = second.for_class("n01440764")
    assert fish.dtype == np.int64
    np.testing.assert_array_equal(fish, [[10, 20, 110, 220], [300, 30, 400, 130]])
    np.testing.assert_array_equal(second.for_class("n02102040"), [[0, 0, 499, 374]])
    assert second.for_class("n09999999").shape == (0, 4)


def test_voc_coordinates_written_as_floats(tmp_path):
    (tmp_path / "a.xml").write_text(voc_xml(10, 10, [("n1", "1.0", "2", "3.0", "4")]))
    np.testing.assert_array_equal(read_voc_folder(tmp_path)["a"].for_class("n1"), [[1, 2, 3, 4]])
    (tmp_path / "a.xml").write_text(voc_xml(10, 10, [("n1", "1.5", "2", "3", "4")]))
    with pytest.raises(ConfigError, match="bndbox/xmin must be a whole pixel coordinate"):
        read_voc_folder(tmp_path)


def test_voc_errors(tmp_path):
    with pytest.raises(ConfigError, match="holds no .xml annotation files"):
        read_voc_folder(tmp_path)
    (tmp_path / "broken.xml").write_text("<annotation><object>")
    with pytest.raises(ConfigError, match="broken.xml: not a readable XML annotation"):
        read_voc_folder(tmp_path)
    no_box = "<annotation><object><name>n1</name></object></annotation>"
    (tmp_path / "broken.xml").write_text(no_box)
    with pytest.raises(ConfigError, match="needs a <name> and a <bndbox>"):
        read_voc_folder(tmp_path)


KAGGLE = (
    "ImageId,PredictionString\n"
    "ILSVRC2012_val_00008726,n02119789 255 142 454 329 n02119789 44 21 322 295 "
    "n02085620 1 2 3 4 \n"
    "ILSVRC2012_val_00020259,n04376876 219 19 348 344\n"
)


def test_read_kaggle_csv(tmp_path):
    path = tmp_path / "LOC_val_solution.csv"
    path.write_text(KAGGLE)
    boxes = read_kaggle_csv(path)
    assert list(boxes) == ["ILSVRC2012_val_00008726", "ILSVRC2012_val_00020259"]
    fox = boxes["ILSVRC2012_val_00008726"]
    assert fox.size is None
    np.testing.assert_array_equal(
        fox.for_class("n02119789"), [[255, 142, 454, 329], [44, 21, 322, 295]]
    )
    np.testing.assert_array_equal(fox.for_class("n02085620"), [[1, 2, 3, 4]])
    assert boxes["ILSVRC2012_val_00020259"].boxes == (("n04376876", 219, 19, 348, 344),)


@pytest.mark.parametrize(
    "text, match",
    [
        ("Id,Boxes\na,n1 1 2 3 4\n", "first line must be 'ImageId,PredictionString'"),
        ("ImageId,PredictionString\na,n1 1 2 3\n", ":2: PredictionString must be groups"),
        ("ImageId,PredictionString\na,n1 1 2 3 4\na,n1 1 2 3 4\n", ":3: expected one new"),
        ("ImageId,PredictionString\na,n1 x 2 3 4\n", "coordinate must be a number; got 'x'"),
    ],
)
def test_kaggle_errors(tmp_path, text, match):
    path = tmp_path / "solution.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        read_kaggle_csv(path)


def test_load_boxes_dispatch(tmp_path, voc_folder):
    assert load_boxes(voc_folder) == read_voc_folder(voc_folder)
    csv_path = tmp_path / "LOC_val_solution.csv"
    csv_path.write_text(KAGGLE)
    assert load_boxes(str(csv_path)) == read_kaggle_csv(csv_path)
    with pytest.raises(ConfigError, match="it is neither"):
        load_boxes(voc_folder / "notes.txt")
    with pytest.raises(ConfigError, match="it is missing"):
        load_boxes(tmp_path / "nowhere")


@pytest.mark.skipif(not REAL_BBOX.is_dir(), reason="development data (../shared) not present")
def test_real_imagenet_val_100_boxes():
    boxes = load_boxes(REAL_BBOX)
    assert len(boxes) == 100
    first = boxes["ILSVRC2012_val_00000001"]
    assert first.size == (496, 368)
    np.testing.assert_array_equal(first.for_class("n01751748"), [[111, 108, 441, 193]])
    for image in boxes.values():
        width, height = image.size
        for _, x0, y0, x1, y1 in image.boxes:
            assert 0 <= x0 <= x1 < width and 0 <= y0 <= y1 < height
