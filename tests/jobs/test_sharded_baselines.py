"""Sharded baselines (``perturb baseline --shard``) against one process, the plan's kind deciding
what ``perturb merge`` merges, the merge of evaluated parts, and a CLI without shard logic."""

import ast
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skimage.data
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import StoreError
from pipeline.evaluation import EvalConfig, combine_parts
from pipeline.jobs.shards import PLAN_FILE, read_plan, shards_dir
from pipeline.metrics import CALIBRATION_ALPHAS
from pipeline.store import MaskStore

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
PICTURES = ["chelsea", "coffee", "astronaut", "rocket", "immunohistochemistry", "colorwheel"]
# -b 6 over 7 indices (index 4 unreadable): one process computes a batch of 5 images (+ the broken
# one) and image 6 alone; shard 0 computes images 0, 2 and 6 together, shard 1 images 1, 3 and 5.
# Equal stores need every batch computed at the full size (pipeline.jobs.run.CPU_PADDING): without
# it image 6's p_original (gradient baseline) differed in the last bits.
OPTIONS = ["-b", "6", "--workers", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """An ImageNet-style folder: 6 pictures in 3 classes and one broken file (7 indices)."""
    root = tmp_path_factory.mktemp("val")
    layout = {"n01440764": PICTURES[2:4], "n01443537": PICTURES[4:6], "n02124075": PICTURES[:2]}
    for wnid, names in layout.items():
        (root / wnid).mkdir()
        for name in names:
            picture = getattr(skimage.data, name)()[..., :3]
            Image.fromarray(picture).resize((160, 120)).save(root / wnid / f"{name}.jpg")
    (root / "n02124075" / "broken.jpg").write_bytes(b"not a jpeg")
    return root


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _ok(result):
    assert result.exit_code == 0, result.output
    return result.output


def _one_error_line(result):
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def _same_store(path, reference):
    with MaskStore(path) as got, MaskStore(reference) as want:
        pd.testing.assert_frame_equal(got.table(), want.table(), check_exact=True)  # bit for bit
        np.testing.assert_array_equal(got.masks().numpy(), want.masks().numpy())  # NaN where skipped
        assert got.config == want.config and got.run_key == want.run_key and got.shard == ""


@pytest.mark.parametrize("name, options", [
    ("random", []), ("gradient", []), ("gradcam", []),
    # the registry's methods on the tiny network: RISE (one mask set for every image, drawn from its
    # seed) and a Captum gradient method
    ("rise", ["--opt", "num_masks=40", "--model", "TINY"]),
    ("captum:IntegratedGradients", ["--opt", "n_steps=4", "--model", "TINY"]),
])
def test_sharded_baseline_merges_into_the_one_process_store(folder, tiny_model, tmp_path, name, options):
    options = [tiny_model if option == "TINY" else option for option in options]
    one = tmp_path / "one.h5"
    _ok(runner.invoke(app, ["baseline", name, str(folder), "--out", str(one), *options, *OPTIONS]))
    out = tmp_path / "sharded.h5"
    first = _ok(runner.invoke(app, ["baseline", name, str(folder), "--out", str(out), "--shard", "0/2", *options,
                                    *OPTIONS]))
    assert "3 solved now" in first and "waiting for shards 1 of 2" in first  # 4 indices, one unreadable
    assert read_plan(out).kind == "masks" and not out.exists()
    second = _ok(runner.invoke(app, ["baseline", name, str(folder), "--out", str(out), "--shard", "1/2", *options,
                                     *OPTIONS]))
    assert "all 2 shards are complete" in second
    assert f"merged into {out}" in _ok(runner.invoke(app, ["merge", str(out)]))
    _same_store(out, one)
    assert not shards_dir(out).exists()
    again = _ok(runner.invoke(app, ["baseline", name, str(folder), "--out", str(out), "--shard", "1/2", *options,
                                    *OPTIONS]))
    assert "already merged" in again


def test_a_shard_of_another_baseline_or_kind_is_refused(folder, tmp_path):
    out = tmp_path / "b.h5"
    _ok(runner.invoke(app, ["baseline", "random", str(folder), "--out", str(out), "--shard", "0/2", *OPTIONS]))
    line = _one_error_line(runner.invoke(app, ["baseline", "centre", str(folder), "--out", str(out),
                                               "--shard", "1/2", *OPTIONS]))
    assert "configuration differs" in line and "baseline" in line
    # A plan written before plans recorded their kind is a mask run's, and keeps its key: the
    # shard already written still belongs to it.
    plan = shards_dir(out) / PLAN_FILE
    legacy = json.loads(plan.read_text())
    del legacy["kind"]
    plan.write_text(json.dumps(legacy, sort_keys=True, indent=1) + "\n")
    _ok(runner.invoke(app, ["baseline", "random", str(folder), "--out", str(out), "--shard", "1/2", *OPTIONS]))
    _ok(runner.invoke(app, ["merge", str(out)]))
    # An evaluation into a folder whose shards are a mask run's is refused, not mixed in.
    _ok(runner.invoke(app, ["baseline", "random", str(folder), "--out", str(tmp_path / "r"), "--shard", "0/2",
                            *OPTIONS]))
    line = _one_error_line(runner.invoke(app, ["evaluate", str(out), "--out", str(tmp_path / "r"), "--shard", "0/2",
                                               "--workers", "0", "--device", "cpu"]))
    assert "sharded 'masks' run, not of 'evaluate'" in line


def test_combine_parts_takes_each_row_from_the_part_that_evaluated_it():
    table = pd.DataFrame({"index": [0, 1, 2, 3], "path": list("abcd"), "status": ["ok", "ok", "skipped", "ok"]})

    def part(statuses, aucs, evaluated):
        rows = table.assign(eval_status=statuses, insertion_auc=aucs)
        curves = {"fraction": np.array([0.0, 1.0]), "index": np.array(evaluated),
                  "path": np.array([table["path"][i] for i in evaluated]),
                  "insertion": np.array([[i, i + 0.5] for i in evaluated], dtype=np.float32)}
        return rows, curves

    even = part(["ok", "not selected", "skipped in store", "not selected"], [0.25, np.nan, np.nan, np.nan], [0])
    odd = part(["not selected", "ok", "skipped in store", "unreadable: gone"], [np.nan, 0.75, np.nan, np.nan], [1])
    metrics, curves = combine_parts(table, [odd, even])
    assert metrics == {0: {"eval_status": "ok", "insertion_auc": 0.25}, 1: {"eval_status": "ok", "insertion_auc": 0.75},
                       3: {"eval_status": "unreadable: gone"}}
    assert curves["index"].tolist() == [0, 1] and curves["path"].tolist() == ["a", "b"]  # store order
    np.testing.assert_array_equal(curves["insertion"], [[0, 0.5], [1, 1.5]])
    with pytest.raises(StoreError, match="evaluated by two parts"):
        combine_parts(table, [even, even])


def test_held_out_settings_add_the_calibration_grid():
    assert EvalConfig.with_alpha_split(None, 3, step=100) == EvalConfig(step=100)
    config = EvalConfig.with_alpha_split(0.5, 3, step=100, mean_alphas=(7.25,))
    assert (config.alpha_split, config.alpha_split_seed, config.step) == (0.5, 3, 100)
    assert config.value_alphas == tuple(sorted(set(EvalConfig().value_alphas) | set(CALIBRATION_ALPHAS["value"])))
    assert config.energy_alphas == tuple(sorted(set(EvalConfig().energy_alphas) | set(CALIBRATION_ALPHAS["energy"])))
    assert config.mean_alphas == tuple(sorted({7.25} | set(CALIBRATION_ALPHAS["mean"])))


def test_the_cli_neither_branches_on_shards_nor_imports_their_protocol():
    tree = ast.parse((ROOT / "pipeline" / "cli.py").read_text())
    branches = [node for node in ast.walk(tree) if isinstance(node, (ast.If, ast.IfExp, ast.While))]
    for node in branches:
        names = {n.id for n in ast.walk(node.test) if isinstance(n, ast.Name)}
        names |= {n.attr for n in ast.walk(node.test) if isinstance(n, ast.Attribute)}
        assert not any("shard" in name or "rank" in name for name in names), ast.unparse(node.test)
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert imported.isdisjoint({"ShardPlan", "MaskShard", "EvaluationShard", "read_plan", "claim_file",
                                 "process_group_barrier", "restart_count", "PLAN_FILE"})
