"""Named saliency methods as jobs: `perturb baseline` with --opt/--layer (checked before any image,
recorded, resumed, sharded), `perturb models --layers`, and `perturb sweep --method`."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.jobs.baselines import baseline_config
from pipeline.jobs.run import RunConfig
from pipeline.models import load_model
from pipeline.store import MaskStore, run_key
from tests.helpers.images import write_folder

runner = CliRunner()
OPTIONS = ["-b", "4", "--workers", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Three scikit-image pictures in an ImageNet-style folder (the runs use the suite's ``tiny_model``)."""
    return write_folder(tmp_path_factory.mktemp("val"), {"n02124075": ["chelsea", "coffee", "astronaut"]},
                        size=(160, 120))


def _ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def _one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_integrated_gradients_records_its_options_and_resumes(folder, tiny_model, tmp_path):
    out = tmp_path / "ig.h5"
    command = ["baseline", "captum:IntegratedGradients", str(folder), "--out", str(out), "--model", tiny_model,
               "--opt", "n_steps=4", *OPTIONS]
    assert "3 solved now" in _ok(runner.invoke(app, command))
    with MaskStore(out) as store:
        assert store.config["baseline"] == "captum:IntegratedGradients"
        assert store.config["options"]["n_steps"] == 4  # the string from the command line, as the option's type
        assert store.config["options"]["internal_batch_size"] == 128  # defaults recorded too
        assert store.config["reduction"]  # how the (3, H, W) attribution became one map
        masks = store.masks()
        assert masks.shape == (3, 1, 224, 224) and torch.isfinite(masks).all()
        # min-max normalised saliency: each map spans [0, 1]
        assert torch.allclose(masks.flatten(1).min(1).values, torch.zeros(3))
        assert torch.allclose(masks.flatten(1).max(1).values, torch.ones(3))
    again = _ok(runner.invoke(app, command))
    assert "0 solved now" in again
    # other options are another run: refused without --overwrite, the store untouched
    other = runner.invoke(app, [*command[:-len(OPTIONS) - 1], "n_steps=8", *OPTIONS])
    assert _one_error_line(other)
    with MaskStore(out) as store:
        assert store.config["options"]["n_steps"] == 4 and len(store) == 3


def test_rise_with_fewer_masks(folder, tiny_model, tmp_path):
    out = tmp_path / "r.h5"
    assert "3 solved now" in _ok(runner.invoke(app, ["baseline", "rise", str(folder), "--out", str(out), "--model",
                                                     tiny_model, "--opt", "num_masks=64", *OPTIONS]))
    with MaskStore(out) as store:
        assert store.config["options"] == {"num_masks": 64, "num_cells": 7, "p": 0.5, "seed": 0, "batch_size": 128}
        assert torch.isfinite(store.masks()).all()


@pytest.mark.parametrize("arguments, says", [
    (["captum:Nope"], "captum:IntegratedGradients"),  # lists the family's members
    (["nonsense"], "gradcam"),  # lists every method
    (["captum:IntegratedGradients", "--opt", "nsteps=4"], "n_steps"),  # lists the options
    (["gradcam", "--opt", "n_steps=4"], "(none)"),
    (["captum:IntegratedGradients", "--opt", "n_steps"], "KEY=VALUE"),
    (["captum:LayerGradCam", "--layer", "nope"], "bn2"),  # lists the model's spatial layers
])
def test_unknown_method_option_or_layer_is_one_error_line_and_no_store(folder, tmp_path, arguments, says):
    out = tmp_path / "x.h5"
    line = _one_error_line(runner.invoke(app, ["baseline", arguments[0], str(folder), "--out", str(out),
                                               *arguments[1:], *OPTIONS]))
    assert says in line
    assert list(tmp_path.iterdir()) == []


def test_sharded_captum_saliency_merges_into_the_one_process_store(folder, tiny_model, tmp_path):
    base = ["baseline", "captum:Saliency", str(folder), "--model", tiny_model, *OPTIONS]
    one = tmp_path / "one.h5"
    _ok(runner.invoke(app, [*base, "--out", str(one)]))
    out = tmp_path / "sharded.h5"
    _ok(runner.invoke(app, [*base, "--out", str(out), "--shard", "0/2"]))
    _ok(runner.invoke(app, [*base, "--out", str(out), "--shard", "1/2"]))
    if not out.exists():
        _ok(runner.invoke(app, ["merge", str(out)]))
    with MaskStore(out) as got, MaskStore(one) as want:
        pd.testing.assert_frame_equal(got.table(), want.table(), check_exact=True)
        np.testing.assert_array_equal(got.masks().numpy(), want.masks().numpy())
        assert got.config == want.config and got.run_key == want.run_key


def test_methods_without_options_keep_their_configuration(tiny_model):
    classifier = load_model(tiny_model, device="cpu")
    config = baseline_config("gradcam", classifier, RunConfig())
    # the configuration (hence the run key) stores of these methods were written with
    assert config == {"baseline": "gradcam", "model": classifier.spec, "target": "top1", "seed": 0,
                      "input_size": [224, 224]}
    assert run_key(baseline_config("centre", classifier, RunConfig())) != run_key(config)


def test_models_lists_layers_with_the_default_marked():
    lines = _ok(runner.invoke(app, ["models", "--layers", "efficientnet_lite0"])).splitlines()
    marked = [line for line in lines if line.startswith("*")]
    assert len(marked) == 1 and marked[0].split()[1] == "bn2" and "1280x7x7" in marked[0]
    assert any(line.split()[0] == "conv_stem" for line in lines)


def test_sweep_compares_a_preset_with_a_method(folder, tiny_model, tmp_path):
    out = tmp_path / "sweep"
    command = ["sweep", str(folder), "-p", "paper-fast", "-n", "1", "--method", "captum:Saliency", "--limit", "2",
               "--model", tiny_model, "--out", str(out), "--step", "12544", *OPTIONS]
    _ok(runner.invoke(app, command))
    table = (out / "comparison.md").read_text()
    assert "paper\\-fast" in table and "captum\\-Saliency" in table
    assert (out / "captum-Saliency" / "masks.h5").exists() and (out / "report.html").exists()
    with MaskStore(out / "captum-Saliency" / "masks.h5") as store:
        assert store.config["baseline"] == "captum:Saliency" and len(store) == 2
    again = _ok(runner.invoke(app, command))
    assert again.count("report is up to date") == 2


def test_sweep_refuses_an_option_of_a_method_it_does_not_run(folder, tmp_path):
    line = _one_error_line(runner.invoke(app, ["sweep", str(folder), "--method", "rise", "--opt",
                                               "captum:Saliency:abs=false", "--out", str(tmp_path / "s")]))
    assert "rise" in line
    assert not (tmp_path / "s").exists()


def test_sweep_gives_a_slow_variant_fewer_images_and_pairs_it_over_those(folder, tiny_model, tmp_path):
    out = tmp_path / "sweep"
    _ok(runner.invoke(app, ["sweep", str(folder), "--method", "centre", "--method", "captum:Saliency", "--limit", "2",
                            "--limit-for", "captum:Saliency=1", "--model", tiny_model, "--out", str(out),
                            "--step", "12544", *OPTIONS]))
    with MaskStore(out / "centre" / "masks.h5") as full, MaskStore(out / "captum-Saliency" / "masks.h5") as few:
        assert (len(full), len(few)) == (2, 1)
    table = pd.read_csv(out / "comparison.csv")
    measured = table[table["run"] == "centre"].query("n == 2")["metric"]  # metrics with a value per image
    saliency = table[(table["run"] == "captum-Saliency") & table["metric"].isin(measured)]
    assert len(saliency) and set(saliency["n"]) == {1} and set(saliency["n_paired"]) == {1}


def test_sweep_refuses_a_limit_for_a_variant_it_does_not_run(folder, tmp_path):
    line = _one_error_line(runner.invoke(app, ["sweep", str(folder), "--method", "centre", "--limit-for", "rise=3",
                                               "--out", str(tmp_path / "s")]))
    assert "rise" in line and "centre" in line
    assert not (tmp_path / "s").exists()
