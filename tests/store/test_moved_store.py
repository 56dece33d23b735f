"""A store and its images moved together (or mounted elsewhere) still find their images: the store
records its image folder as given (symbolic links not followed) and relative to itself."""

import os
import shutil

import numpy as np
from PIL import Image
from skimage import data as skdata
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.store import MaskStore

runner = CliRunner()


def test_a_moved_tree_finds_its_images_and_symlinks_are_kept(tmp_path):
    tree = tmp_path / "tree"
    (tree / "images").mkdir(parents=True)
    for name in ("chelsea", "coffee"):
        Image.fromarray(np.asarray(getattr(skdata, name)())).save(tree / "images" / f"{name}.png")
    link = tmp_path / "link"
    os.symlink(tree, link)
    result = runner.invoke(app, ["baseline", "random", str(link / "images"), "--out", str(link / "b.h5"),
                                 "--workers", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    with MaskStore(tree / "b.h5") as store:
        assert store.source == str(link / "images")  # as given: the symbolic link is not resolved
        assert store.attrs["source_relative"] == "images"
    os.unlink(link)
    moved = tmp_path / "moved"
    shutil.move(str(tree), moved)
    with MaskStore(moved / "b.h5") as store:
        assert store.image_root() == moved / "images"
    result = runner.invoke(app, ["export", str(moved / "b.h5"), "--out", str(tmp_path / "pictures"), "--limit", "2"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "pictures").glob("*.png"))) == 4  # heatmap and overlay of both images


def test_stores_made_before_threads_and_source_relative_were_recorded_still_read(tmp_path):
    import h5py

    from pipeline.store import MaskWriter

    path = tmp_path / "old.h5"
    with MaskWriter(path, {"a": 1}, "model", tmp_path / "images", (1, 2, 2)):
        pass
    with h5py.File(path, "r+") as file:
        del file.attrs["threads"], file.attrs["source_relative"]
    with MaskStore(path) as store:
        assert store.image_root() == tmp_path / "images"
    with MaskWriter(path, {"a": 1}, "model", tmp_path / "images", (1, 2, 2)) as writer:
        assert len(writer) == 0  # and it resumes
