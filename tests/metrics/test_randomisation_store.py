"""``perturb randomisation``: the cascading randomisation check of a store, on a tiny network.

The network (:func:`tests.helpers.models.tiny_convnet` at 32x32) has two parameterised blocks, a
linear layer over a convolution, so the check has two steps after ``original``. Checked: step 0
re-makes the stored maps exactly (same method, options and seeds; for a solver store the same
configuration and seeds), step 1's similarities equal those of maps made by hand on a copy whose
linear layer was reset after ``torch.manual_seed(seed + 1)`` (Quantus' rule), and they differ from
the identity; the files and the settings; the report's section.
"""

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.config import resolve
from pipeline.errors import ConfigError
from pipeline.evaluation import stored_pictures
from pipeline.jobs.baselines import baseline_saliency, run_baseline
from pipeline.jobs.randomisation import RandomisationConfig, randomise_store
from pipeline.jobs.run import RunConfig, run_masks
from pipeline.metrics import map_similarity
from pipeline.store import MaskStore
from tests.helpers.models import classifier_of, tiny_convnet

SIZE = (32, 32)


def test_method_store_first_step_differs_from_identity(gradient_store, imagenet_folder, tiny_classifier, tmp_path,
                                                       one_thread):
    config = RandomisationConfig(limit=4, seed=7, batch_size=3)
    result = randomise_store(gradient_store, tmp_path / "rand", tiny_classifier, config=config)
    summary = json.loads((tmp_path / "rand" / "randomisation.json").read_text())
    assert summary["steps"] == ["original", "4", "0"] and summary["images"] == 4
    assert summary["settings"]["blocks"] == [["4", ["4"]], ["0", ["0"]]] and summary["settings"]["seed"] == 7
    assert "target" in summary["settings"]["class_explained"]
    table = pd.read_csv(tmp_path / "rand" / "randomisation.csv")
    assert len(table) == 4 * 3 and (tmp_path / "rand" / "randomisation.png").stat().st_size > 0
    first = table[table["step"] == 0]  # re-made on the unmodified model against the (half-precision) store
    np.testing.assert_allclose(first[["spearman_abs", "ssim", "hog_pearson"]].to_numpy(), 1.0, atol=5e-3)
    # step 1 by hand: gradient maps of a copy with the linear layer reset, against the unmodified model's
    randomised = copy.deepcopy(tiny_classifier.module)
    torch.manual_seed(8)
    randomised[4].reset_parameters()
    with MaskStore(gradient_store) as store:
        batch = next(stored_pictures(store, np.arange(4), imagenet_folder, batch_size=4))
        targets = torch.from_numpy(store.column("target")[:4].astype(np.int64))
        seeds = torch.from_numpy(store.column("index")[:4].astype(np.int64))
    maps = baseline_saliency("gradient", classifier_of(randomised, SIZE, classes=1000), batch.images, targets, seeds)
    expected = map_similarity(baseline_saliency("gradient", tiny_classifier, batch.images, targets, seeds), maps)
    second = table[table["step"] == 1]
    for key in ("spearman_abs", "spearman", "ssim", "hog_pearson"):
        np.testing.assert_allclose(second[key].to_numpy(), expected[key], atol=1e-6)  # batches of 3 vs 4
    assert second["spearman_abs"].mean() < 0.99  # the maps changed with the model
    assert result.summary["mean"]["spearman_abs"][1] == pytest.approx(second["spearman_abs"].mean())


def test_solver_store_is_re_solved_with_its_seeds(imagenet_folder, tiny_classifier, tmp_path, one_thread):
    solver = resolve("paper-fast", ["mask.size=8"], iterations=3)
    store = tmp_path / "masks.h5"
    run_masks(imagenet_folder, store, tiny_classifier, solver,
              RunConfig(batch_size=2, workers=0, progress=False, seed=5))
    result = randomise_store(store, tmp_path / "rand", tiny_classifier, config=RandomisationConfig(limit=3, steps=1))
    assert result.summary["steps"] == ["original", "4"]
    identity = result.table[result.table["step"] == 0]
    np.testing.assert_allclose(identity["spearman_abs"].to_numpy(), 1.0, atol=5e-3)
    assert result.summary["settings"]["store_config"]["seed"] == 5


def test_imported_and_foreign_stores_are_refused(gradient_store, tmp_path):
    other = classifier_of(tiny_convnet(1000), (48, 48), classes=1000)
    with pytest.raises(ConfigError, match="explains"):
        randomise_store(gradient_store, tmp_path / "x", other)
    with pytest.raises(ConfigError, match="limit must be an integer >= 1"):
        RandomisationConfig(limit=0)


def test_every_step_re_makes_maps_on_its_own_weights(imagenet_folder, tmp_path, one_thread):
    """Guided backprop runs on a cached out-of-place copy of a network with in-place ReLUs; each
    cascading step must still see its own weights (a stale copy would repeat step 1's maps)."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(inplace=True),
                              torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(128, 1000))
    net.load_state_dict(tiny_convnet(1000).state_dict())
    model = classifier_of(net, SIZE, classes=1000)
    store = tmp_path / "gb.h5"
    run_baseline("captum:GuidedBackprop", imagenet_folder, store, model, RunConfig(batch_size=4, workers=0, progress=False))
    result = randomise_store(store, tmp_path / "rand", model, config=RandomisationConfig(limit=2))
    with MaskStore(store) as opened:
        batch = next(stored_pictures(opened, np.arange(2), imagenet_folder, batch_size=2))
        targets = torch.from_numpy(opened.column("target")[:2].astype(np.int64))
        seeds = torch.from_numpy(opened.column("index")[:2].astype(np.int64))
    both = copy.deepcopy(net)
    for layer in (both[4], both[0]):  # step 2: both blocks reset, each after manual_seed(43)
        torch.manual_seed(43)
        layer.reset_parameters()
    original = baseline_saliency("captum:GuidedBackprop", model, batch.images, targets, seeds)
    randomised = baseline_saliency("captum:GuidedBackprop", classifier_of(both, SIZE, classes=1000), batch.images,
                                   targets, seeds)
    expected = map_similarity(original, randomised)
    last = result.table[result.table["step"] == 2]
    np.testing.assert_allclose(last["spearman_abs"].to_numpy(), expected["spearman_abs"], atol=1e-6)


def test_an_unreadable_image_is_skipped_and_a_wrong_folder_refused(gradient_store, imagenet_folder, tiny_classifier,
                                                                   tmp_path, one_thread):
    import shutil

    from pipeline.errors import ImageReadError

    root = tmp_path / "images"
    shutil.copytree(imagenet_folder, root)
    with MaskStore(gradient_store) as store:
        ok = store.table().query("status == 'ok'")["path"].tolist()
    (root / ok[1]).write_bytes(b"no longer an image")
    config = RandomisationConfig(limit=4, steps=1, batch_size=2)
    result = randomise_store(gradient_store, tmp_path / "rand", tiny_classifier, data_root=root, config=config)
    assert result.summary["images"] == 3 and result.summary["images_planned"] == 4
    assert list(result.summary["skipped"]) == [ok[1]]
    assert set(result.table["path"]) == {ok[0], ok[2], ok[3]}
    assert result.lines()[-1].startswith("skipped 1 image(s)")
    with pytest.raises(ImageReadError, match="--data"):  # nothing there: said before any map is made
        randomise_store(gradient_store, tmp_path / "rand2", tiny_classifier, data_root=tmp_path / "nowhere",
                        config=config)
    assert not (tmp_path / "rand2").exists()


def test_a_stopped_check_resumes_to_the_uninterrupted_files(gradient_store, tiny_classifier, tmp_path, one_thread):
    config = RandomisationConfig(limit=4, steps=1, batch_size=2)
    whole = randomise_store(gradient_store, tmp_path / "whole", tiny_classifier, config=config)
    lines = []

    def stop_after_first_batch(line):
        lines.append(line)
        raise KeyboardInterrupt  # the files of the first batch are written before this

    with pytest.raises(KeyboardInterrupt):
        randomise_store(gradient_store, tmp_path / "part", tiny_classifier, config=config, notify=stop_after_first_batch)
    assert json.loads((tmp_path / "part" / "randomisation.json").read_text())["images"] == 2
    lines.clear()
    resumed = randomise_store(gradient_store, tmp_path / "part", tiny_classifier, config=config, notify=lines.append)
    assert lines[0] == "randomisation: resuming after 2 of 4 images" and len(lines) == 2  # one batch re-made
    assert (tmp_path / "part" / "randomisation.csv").read_text() == (tmp_path / "whole" / "randomisation.csv").read_text()
    for key in ("spearman_abs", "ssim", "hog_pearson"):
        np.testing.assert_allclose(resumed.summary["mean"][key], whole.summary["mean"][key], rtol=1e-12)
    # complete: nothing re-made; another seed replaces the check instead of resuming it
    lines.clear()
    again = randomise_store(gradient_store, tmp_path / "part", tiny_classifier, config=config, notify=lines.append)
    assert lines == ["randomisation: all 4 images were checked before; nothing to do"]
    assert again.summary["images"] == 4 and again.table["index"].tolist() == resumed.table["index"].tolist()
    np.testing.assert_allclose(again.table["ssim"], resumed.table["ssim"], rtol=1e-6)
    lines.clear()
    other = RandomisationConfig(limit=4, steps=1, batch_size=2, seed=3)
    randomise_store(gradient_store, tmp_path / "part", tiny_classifier, config=other, notify=lines.append)
    assert not any("resuming" in line for line in lines) and len(lines) == 2
