"""A configuration has one identity: values normalised when a configuration is made, one key
(pipeline.identity.run_key) for every comparison, and the preset's name recorded beside it."""

import hashlib
import json

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import ObjectiveConfig, from_dict, override, preset, resolve, to_dict
from pipeline.errors import ConfigError, StoreError
from pipeline.identity import PROVENANCE, canonical_json, config_diff, flatten, run_key
from pipeline.jobs.run import RunConfig, run_masks, store_config
from pipeline.models import Classifier
from pipeline.store import MaskStore, MaskWriter, config_name, merge_shards, summary
from tests.helpers.models import classifier_of

FAST_AS_OVERRIDES = ["objective.l1_start=4", "objective.l1_decay=75"]


def test_run_key_is_the_sha256_of_normalised_sorted_json():
    """By hand: 4.0 is written 4, tuples are lists, keys sorted, provenance left out."""
    config = {"b": (1, 2.0), "a": 4.0, "c": {"d": 0.5}, PROVENANCE: {"preset": "x", "overrides": []}}
    text = '{"a":4,"b":[1,2],"c":{"d":0.5}}'
    assert run_key(config) == hashlib.sha256(text.encode()).hexdigest()[:16]
    assert run_key({"a": 4, "b": [1, 2], "c": {"d": 0.5}}) == run_key(config)
    assert run_key({"a": 4.5}) != run_key({"a": 4})
    assert run_key({"a": True}) != run_key({"a": 1})  # JSON's true is not the number 1
    # What a store records keeps the numbers as given (a float field reads back a float).
    assert canonical_json(config) == '{"a":4.0,"b":[1,2.0],"c":{"d":0.5}}'


def test_flatten_and_diff():
    assert flatten({"a": {"b": 1, "c": {}}, "d": [1, 2]}) == {"a.b": 1, "a.c": {}, "d": [1, 2]}
    assert flatten({}) == {}
    assert config_diff({"s": {"x": 4}}, {"s": {"x": 4.0}}) == ""
    assert config_diff({"s": {"x": 4}, "y": 1}, {"s": {"x": 5}}) == 's.x: file 4, now 5; y: file 1, now "<absent>"'


def test_field_values_take_their_declared_type():
    config = resolve("paper", ["objective.l1_start=4", "optim.iterations=75.0", "areas=[0.1, 0.5]"])
    assert type(config.objective.l1_start) is float and config.objective.l1_start == 4.0
    assert type(config.optim.iterations) is int and config.optim.iterations == 75
    assert config.objective.areas == (0.1, 0.5) and config.objective.areas.__class__ is tuple
    assert ObjectiveConfig(l1_start=4).l1_start.__class__ is float
    # A configuration recorded with an integer where the field is a float reads back as a float.
    old = to_dict(preset("paper-fast"))
    old["objective"]["l1_start"] = 4
    assert from_dict(old).objective.l1_start.__class__ is float
    for assignment, message in (("sigma=abc", "perturbation.sigma must be a number, got 'abc'"),
                                ("optim.iterations=2.5", "optim.iterations must be a whole number, got 2.5"),
                                ("mask.flip=1", "mask.flip must be true or false, got 1"),
                                ("objective.areas=0.1", "objective.areas must be a list of numbers")):
        with pytest.raises(ConfigError, match=message):
            override(preset("paper"), [assignment])


def test_a_preset_and_its_overrides_are_one_configuration_with_two_names():
    fast = resolve("paper-fast")
    spelled = resolve("paper", FAST_AS_OVERRIDES, iterations=75)
    assert fast == spelled and hash(fast) == hash(spelled) and to_dict(fast) == to_dict(spelled)
    assert (fast.origin.preset, fast.origin.overrides) == ("paper-fast", ())
    assert spelled.origin.overrides == (*FAST_AS_OVERRIDES, "optim.iterations=75")
    assert resolve("paper", ["tv_coeff=0.5"]).origin.overrides == ("objective.tv_coeff=0.5",)
    assert resolve("blur").origin.overrides == ()


def tiny_classifier() -> Classifier:
    """6 classes (the solver takes a top 5), 32 x 32 input: a 3x3 convolution, mean pooling, a linear layer."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                           nn.Linear(4, 6))
    return classifier_of(module, (32, 32), mean=(0.5,) * 3, std=(0.25,) * 3, classes=6)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model's solves are dominated by thread start-up on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    for i in range(3):
        pixels = np.random.default_rng(i).integers(0, 256, size=(24, 20, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"img{i}.png")
    return root


def _run(folder, out, config, limit):
    run = RunConfig(batch_size=2, workers=0, progress=False, limit=limit)
    return run_masks(folder, out, tiny_classifier(), config, run)


@pytest.mark.parametrize("first, second", [("preset", "overrides"), ("overrides", "preset")])
def test_paper_fast_and_paper_with_overrides_resume_each_other(folder, tmp_path, first, second):
    named = {"preset": resolve("paper-fast"), "overrides": resolve("paper", FAST_AS_OVERRIDES, 75)}
    out = tmp_path / "masks.h5"
    made = _run(folder, out, named[first], limit=2)
    assert (made.solved, made.resumed) == (2, 0)
    resumed = _run(folder, out, named[second], limit=3)
    assert (resumed.solved, resumed.resumed) == (1, 2)
    with MaskStore(out) as store:
        assert len(store) == 3 and bool(torch.isfinite(store.masks()).all())
        assert store.config["solver"] == json.loads(json.dumps(to_dict(resolve("paper-fast"))))
        assert PROVENANCE not in store.config
        # The store keeps the name it was made with.
        expected = "paper-fast" if first == "preset" else \
            "paper with objective.l1_start=4, objective.l1_decay=75, optim.iterations=75"
        assert summary(store)["preset"] == expected
        assert store.run_key == run_key(store_config(named[second], RunConfig(), tiny_classifier()))
    with pytest.raises(StoreError, match=r"objective.l1_start: file 4.0, now 4.5.*overwrite=True \(--overwrite\)"):
        _run(folder, out, resolve("paper-fast", ["objective.l1_start=4.5"]), limit=3)
    inspected = CliRunner().invoke(app, ["inspect", str(out)])
    assert inspected.exit_code == 0 and f"preset     {expected}\n" in inspected.output


def test_a_store_keyed_before_normalisation_resumes(tmp_path):
    """A store written by an earlier version with ``--set objective.l1_start=4``: its config holds
    the integer 4 and its run_key attribute the hash of that text. Today's configuration (4.0)
    resumes it, and its key reads as today's."""
    today = {"solver": to_dict(resolve("paper-fast")), "model": "toy"}
    then = json.loads(json.dumps(today))
    then["solver"]["objective"]["l1_start"] = 4
    path = tmp_path / "old.h5"
    rows = {"index": [0], "path": ["a.png"], "height": [5], "width": [5], "label": [-1], "target": [1],
            "status": ["ok"], "reason": [""], "p_original": [0.5], "p_perturbed": [0.1], "p_final": [0.2],
            "loss": [1.0]}
    with MaskWriter(path, then, "toy", tmp_path, mask_shape=(1, 4, 4)) as writer:
        writer.append(rows, np.ones((1, 1, 4, 4)))
    old_text = json.dumps(then, sort_keys=True, separators=(",", ":"))
    old_key = hashlib.sha256(old_text.encode()).hexdigest()[:16]
    with h5py.File(path, "r+") as file:
        assert file.attrs["config"] == old_text  # the recorded text: the integer as given
        file.attrs["run_key"] = old_key  # what the earlier version recorded
    assert old_key != run_key(today)
    with MaskWriter(path, today, "toy", tmp_path, mask_shape=(1, 4, 4)) as writer:
        assert writer.done_indices() == {0}
    with MaskStore(path) as store:
        assert store.attrs["run_key"] == old_key and store.run_key == run_key(today)
        assert (store.preset, store.overrides) == ("", [])
        assert summary(store)["preset"] == "paper-fast"  # guessed: the store has no recorded name


def test_config_name():
    solver = to_dict(resolve("paper"))
    assert config_name({"baseline": "gradcam"}) == "baseline gradcam"
    assert config_name({"solver": solver}, "paper", ["optim.iterations=10"]) == "paper with optim.iterations=10"
    assert config_name({"solver": solver}, "paper") == "paper"
    assert config_name({"solver": to_dict(resolve("paper", ["tv_coeff=0.5"]))}) == \
        "paper with objective.tv_coeff=0.5"
    assert config_name({"model": "x"}) == ""


def test_merged_shards_keep_the_preset(tmp_path):
    config = {"solver": to_dict(resolve("paper-fast")), **{PROVENANCE: resolve("paper-fast").origin.record()}}
    paths = []
    for rank in range(2):
        rows = {"index": [rank], "path": [f"{rank}.png"], "height": [5], "width": [5], "label": [-1],
                "target": [1], "status": ["ok"], "reason": [""], "p_original": [0.5], "p_perturbed": [0.1],
                "p_final": [0.2], "loss": [1.0]}
        with MaskWriter(tmp_path / "m.h5", config, "toy", tmp_path, (1, 4, 4), shard=(rank, 2)) as writer:
            writer.append(rows, np.ones((1, 1, 4, 4)))
            paths.append(writer.path)
    merge_shards(paths, tmp_path / "merged.h5")
    with MaskStore(tmp_path / "merged.h5") as store:
        assert (store.preset, store.overrides, len(store)) == ("paper-fast", [], 2)
        assert store.run_key == run_key(config)


def _store_with_name(path, config):
    rows = {"index": [0], "path": ["a.png"], "height": [5], "width": [5], "label": [-1], "target": [1],
            "status": ["ok"], "reason": [""], "p_original": [0.5], "p_perturbed": [0.1], "p_final": [0.2],
            "loss": [1.0]}
    with MaskWriter(path, config, "toy", path.parent, mask_shape=(1, 4, 4)) as writer:
        writer.append(rows, np.ones((1, 1, 4, 4)))


def test_the_report_shows_the_recorded_name_not_a_guess(tmp_path):
    """The configuration is paper-fast's, but the store was named ``paper`` with overrides: the
    report says so; a store without a recorded name gets the guess."""
    import pandas as pd

    from pipeline.report.provenance import provenance_section
    from pipeline.report.tables import RunData

    spelled = resolve("paper", FAST_AS_OVERRIDES, 75)
    config = {"solver": to_dict(spelled), "model": "toy"}
    runs = []
    for name, recorded in (("named", {**config, PROVENANCE: spelled.origin.record()}), ("old", config)):
        folder = tmp_path / name
        folder.mkdir()
        _store_with_name(folder / "masks.h5", recorded)
        table = pd.DataFrame({"status": ["ok"], "reason": [""], "eval_status": ["ok"]})
        table.to_parquet(folder / "per_image.parquet")
        settings = {"store": str(folder / "masks.h5"), "store_config": json.loads(json.dumps(config))}
        runs.append(RunData(name, folder, table, table, {"settings": settings}, None))
    html = provenance_section(runs)
    assert "paper with objective.l1_start=4, objective.l1_decay=75, optim.iterations=75" in html
    assert "<td>paper-fast</td>" in html  # the old store's guess
