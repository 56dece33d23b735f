"""evaluate_store end to end on a tiny fixed-weight model, hand-made images, stores and boxes.

The model: logits ``(10,)`` with logit 0 = ``C * 16 * mean(x)`` and the others 0, on a 16x16 input
normalised with mean 0 / std 1 (so the normalised input is the [0, 1] image). A white 4x4 patch on
black has ``mean(x) = 1/16``: logit 0 = ``C`` and ``p0 = e^C / (e^C + 9)``; with the patch gone
(zero substrate = black) every logit is 0 and ``p0 = 1/10``. Deletion with zero substrate and
``step = 16`` (16 steps, 17 scores) is then computable on paper.
"""

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torchvision.transforms.functional import gaussian_blur

from pipeline.config import MaskConfig, ObjectiveConfig, SolverConfig, to_dict
from pipeline.errors import ConfigError
from pipeline.evaluation import EvalConfig, evaluate_store, store_saliency
from pipeline.solve.masks import saliency as solver_saliency
from pipeline.models import Classifier
from pipeline.store import MaskStore
from tests.helpers.boxes import voc_xml
from tests.helpers.patch import P_FULL, patch_classifier, patch_image, save_png, write_store

def test_deletion_auc_by_hand(deletion_case, tmp_path):
    store, root = deletion_case
    config = EvalConfig(step=16, chunk=5, batch_size=3, workers=0, gallery=2)
    result = evaluate_store(store, root, patch_classifier(), tmp_path / "out", config=config)
    table = result.table.set_index("path")
    # A: the patch goes first -> [p, 0.1 x 16]; B: the patch goes last -> [p x 16, 0.1].
    auc_a = (P_FULL + 16 * 0.1 - P_FULL / 2 - 0.1 / 2) / 16
    auc_b = (16 * P_FULL + 0.1 - P_FULL / 2 - 0.1 / 2) / 16
    assert table.loc["n00000000/a.png", "deletion_auc_zero"] == pytest.approx(auc_a, abs=1e-6)
    assert table.loc["n00000000/b.png", "deletion_auc_zero"] == pytest.approx(auc_b, abs=1e-6)
    assert table.loc["n00000000/skipped.png", "eval_status"] == "skipped in store"
    assert table.loc["n00000000/gone.png", "eval_status"] == "unreadable: missing"
    assert np.isnan(table.loc["n00000000/gone.png", "deletion_auc_zero"])
    curves = np.load(result.paths["curves_npz"])
    assert curves["deletion_zero"].shape == (2, 17)
    np.testing.assert_allclose(curves["deletion_zero"][0], [P_FULL] + [0.1] * 16, atol=1e-6)
    np.testing.assert_allclose(curves["fraction"], np.arange(17) / 16)
    assert list(curves["path"]) == ["n00000000/a.png", "n00000000/b.png"]
    summary = result.summary
    assert summary["metrics"]["deletion_auc_zero"]["count"] == 2
    assert summary["metrics"]["deletion_auc_zero"]["mean"] == pytest.approx((auc_a + auc_b) / 2, abs=1e-6)
    sem = np.std([auc_a, auc_b], ddof=1) / math.sqrt(2)
    assert summary["metrics"]["deletion_auc_zero"]["sem"] == pytest.approx(sem, abs=1e-6)
    assert summary["counts"]["evaluated"] == 2 and summary["settings"]["step"] == 16
    assert summary["metrics"]["score_drop"]["mean"] == pytest.approx(0.3)


def naive_curve(image: torch.Tensor, saliency: torch.Tensor, substrate: torch.Tensor, insertion: bool,
                model, step: int = 16) -> list[float]:
    """One image, one step at a time: the protocol written out without batching."""
    order = np.argsort(-saliency.flatten().numpy(), kind="stable")
    scores = []
    for k in range(len(order) // step + 1):
        moved = np.zeros(order.size, bool)
        moved[order[: k * step]] = True
        show_image = torch.from_numpy(moved if insertion else ~moved).view(1, 16, 16)
        x = torch.where(show_image, image, substrate)
        scores.append(float(model(x[None]).softmax(1)[0, 0]))
    return scores


def test_blur_curves_match_a_naive_loop_and_do_not_depend_on_batching(deletion_case, tmp_path):
    store, root = deletion_case
    classifier = patch_classifier()
    small = EvalConfig(step=16, chunk=1, batch_size=1, workers=0, plots=False)
    large = EvalConfig(step=16, chunk=64, batch_size=8, workers=0, plots=False)
    first = evaluate_store(store, root, classifier, tmp_path / "a", config=small)
    second = evaluate_store(store, root, classifier, tmp_path / "b", config=large)
    columns = ["deletion_auc_zero", "deletion_auc_blur", "insertion_auc"]
    pd.testing.assert_frame_equal(first.table[columns], second.table[columns])
    curves = np.load(first.paths["curves_npz"])
    image = torch.from_numpy(patch_image()).permute(2, 0, 1).float()
    blurred = gaussian_blur(image[None], [11, 11], [5.0, 5.0])[0]
    with MaskStore(store) as opened:
        heat = store_saliency(opened, [0, 1], (16, 16))
    for i in range(2):
        expected_del = naive_curve(image, heat[i, 0], blurred, False, classifier)
        expected_ins = naive_curve(image, heat[i, 0], blurred, True, classifier)
        np.testing.assert_allclose(curves["deletion_blur"][i], expected_del, atol=1e-6)
        np.testing.assert_allclose(curves["insertion"][i], expected_ins, atol=1e-6)
    # Insertion ends on the image itself, deletion on the substrate.
    assert curves["insertion"][0, -1] == pytest.approx(P_FULL, abs=1e-6)


@pytest.fixture()
def localization_case(tmp_path):
    """Original images 64 wide x 32 tall; a 16x16 mask deleting rows 4..11, cols 8..15.

    Upsampled to 32 x 64 (skimage bilinear, pixel centres aligned), the heatmap is separable:
    rows 7, 8, 9..22, 23, 24 are .25, .75, 1, .75, .25 and columns 30, 31, 32, 33, 34..63 are
    .125, .375, .625, .875, 1 (the block reaches the right edge).
    """
    root, bbox = tmp_path / "data", tmp_path / "bbox"
    bbox.mkdir()
    picture = np.random.default_rng(0).uniform(size=(32, 64, 3))
    names = {"c": "n00000001", "d": "n00000001", "e": "n00000002", "f": "n00000003", "g": "n00000004"}
    for stem, wnid in names.items():
        save_png(root / wnid / f"{stem}.png", picture)
    right = (32, 8, 63, 23)  # the block, scaled: the heatmap's half-maximum box
    (bbox / "c.xml").write_text(voc_xml(64, 32, [("n00000001", *right), ("n00000009", 0, 0, 5, 5)]))
    (bbox / "d.xml").write_text(voc_xml(64, 32, [("n00000001", 0, 0, 15, 15)]))
    (bbox / "e.xml").write_text(voc_xml(64, 32, [("n00000002", *right)]))
    (bbox / "f.xml").write_text(voc_xml(64, 32, [("n00000007", *right)]))  # no box of its class
    mask = np.ones((1, 16, 16), np.float32)
    mask[0, 4:12, 8:16] = 0.0
    rows = [{"path": f"{wnid}/{stem}.png", "height": 32, "width": 64, "label": int(wnid[-1]),
             "target": 3 if stem == "d" else int(wnid[-1])} for stem, wnid in names.items()]
    rows.append({"path": "n00000000/h.png", "height": 32, "width": 64, "label": -1, "target": 0})
    save_png(root / "n00000000/h.png", picture)
    store = tmp_path / "loc.h5"
    write_store(store, rows, np.stack([mask] * len(rows)), source=root)
    return store, root, bbox


def test_localization_in_the_original_frame(localization_case, tmp_path):
    store, root, bbox = localization_case
    config = EvalConfig(step=64, workers=0, value_alphas=(0.1, 0.5), energy_alphas=(0.95,),
                        mean_alphas=(1.0,), gallery=1)
    result = evaluate_store(store, root, patch_classifier(), tmp_path / "out", boxes=bbox, config=config)
    t = result.table.set_index("path")
    c, d = t.loc["n00000001/c.png"], t.loc["n00000001/d.png"]
    assert c["iou_value_0.5_tight"] == pytest.approx(1.0)  # box (32, 8, 63, 23)
    assert c["iou_value_0.1_tight"] == pytest.approx(512 / (34 * 18))  # box (30, 7, 63, 24)
    assert c["iou_mean_1_tight"] == pytest.approx(512 / (33 * 18))  # mean .25: box (31, 7, 63, 24)
    assert c["iou_value_0.5_component"] == pytest.approx(1.0)
    assert c["loc_value_0.1_tight"] == 1.0 and c["loc_status"] == "ok"
    assert c["pointing_hit"] == 1.0  # the first maximum, (x 34, y 9), lies in the box
    assert c["energy_pg"] == pytest.approx((15.5 * 31.5) / (16 * 32))
    assert d["iou_value_0.5_tight"] == 0.0 and d["loc_value_0.5_tight"] == 0.0
    assert d["pointing_hit"] == 0.0  # 19 px right of the box: beyond the 15 px tolerance
    assert t.loc["n00000003/f.png", "loc_status"] == "no box of class"
    assert t.loc["n00000004/g.png", "loc_status"] == "no annotation"
    assert t.loc["n00000000/h.png", "loc_status"] == "no label"
    summary = result.summary
    assert summary["pointing_game"] == {"per_image": pytest.approx(2 / 3), "per_class": pytest.approx(0.75),
                                        "n_images": 3, "n_classes": 2}
    assert summary["metrics"]["loc_value_0.5_tight"] == {"mean": pytest.approx(2 / 3), "count": 3,
                                                        "sem": pytest.approx(np.std([1, 0, 1], ddof=1) / 3**0.5),
                                                        "better": "higher"}
    counts = summary["counts"]
    assert counts["localized"] == 3 and counts["localized_target_differs_from_label"] == 1
    assert counts["loc_excluded_by_reason"] == {"no box of class": 1, "no annotation": 1, "no label": 1}
    assert summary["settings"]["iou_correct"] == 0.5 and summary["settings"]["pointing_tolerance_px"] == 15
    on_disk = json.loads(result.paths["summary_json"].read_text())
    assert on_disk["counts"] == json.loads(json.dumps(counts))
    reread = pd.read_parquet(result.paths["per_image_parquet"])
    assert len(reread) == 6 and "energy_pg" in reread and "p_original" in reread
    for name in ("curves_png", "gallery_insertion_auc", "gallery_energy_pg", "summary_csv", "per_image_csv"):
        assert result.paths[name].is_file()


def test_store_saliency_uses_the_solver_upsampling(tmp_path):
    solver = SolverConfig(mask=MaskConfig(size=4, upsample="nearest-blur", smooth_sigma=1.0),
                          objective=ObjectiveConfig(game="preserve"))
    masks = np.random.default_rng(1).uniform(size=(2, 1, 4, 4)).astype(np.float32)
    write_store(tmp_path / "s.h5", [{"path": "a.png"}, {"path": "b.png"}], masks,
                config={"solver": to_dict(solver), "model": "tiny"})
    write_store(tmp_path / "b.h5", [{"path": "a.png"}, {"path": "b.png"}], masks)
    stored = torch.from_numpy(masks.astype(np.float16).astype(np.float32))
    with MaskStore(tmp_path / "s.h5") as store:
        heat = store_saliency(store, [1, 0], (16, 16))
    expected = solver_saliency(stored[[1, 0]], "preserve", (16, 16), solver.mask)
    torch.testing.assert_close(heat, expected)
    with MaskStore(tmp_path / "b.h5") as store:
        baseline = store_saliency(store, [0], (16, 16))
    bilinear = torch.nn.functional.interpolate(stored[:1], size=(16, 16), mode="bilinear", align_corners=True)
    torch.testing.assert_close(baseline, 1 - bilinear)


def test_mismatched_model_and_bad_config_are_refused(deletion_case, tmp_path):
    store, root = deletion_case
    other = patch_classifier()
    other = Classifier(other.module, "other", other.input_size, other.mean, other.std, other.vocabulary)
    with pytest.raises(ConfigError, match="load_model"):
        evaluate_store(store, root, other, tmp_path / "out")
    with pytest.raises(ConfigError, match="step"):
        EvalConfig(step=0)
    with pytest.raises(ConfigError, match="value_alphas"):
        EvalConfig(value_alphas=(1.5,))
    with pytest.raises(ConfigError, match="box_kinds"):
        EvalConfig(box_kinds=("round",))


def test_a_store_with_nothing_to_evaluate_still_reports(tmp_path):
    rows = [{"path": "a.png", "status": "skipped", "reason": "truncated"}]
    write_store(tmp_path / "s.h5", rows, np.full((1, 1, 16, 16), np.nan, np.float32), source=tmp_path)
    result = evaluate_store(tmp_path / "s.h5", None, patch_classifier(), tmp_path / "out",
                            boxes={}, config=EvalConfig(workers=0, step=64))
    assert result.summary["counts"]["evaluated"] == 0 and result.summary["counts"]["localized"] == 0
    assert result.table["eval_status"].tolist() == ["skipped in store"]
    on_disk = json.loads(result.paths["summary_json"].read_text())
    assert on_disk["metrics"]["insertion_auc"] == {"mean": None, "sem": None, "count": 0, "better": "higher"}
    assert np.load(result.paths["curves_npz"])["insertion"].shape == (0, 5)


def test_only_the_selected_images_are_evaluated(deletion_case, tmp_path):
    store, root = deletion_case
    config = EvalConfig(step=16, chunk=5, batch_size=3, workers=0, plots=False)
    result = evaluate_store(store, root, patch_classifier(), tmp_path / "sel", config=config, indices=[1])
    table = result.table.set_index("path")
    assert table.loc["n00000000/a.png", "eval_status"] == "not selected"
    assert np.isnan(table.loc["n00000000/a.png", "deletion_auc_zero"])
    auc_b = (16 * P_FULL + 0.1 - P_FULL / 2 - 0.1 / 2) / 16
    assert result.summary["metrics"]["deletion_auc_zero"]["mean"] == pytest.approx(auc_b, abs=1e-6)
    assert result.summary["metrics"]["deletion_auc_zero"]["count"] == 1


def test_alpha_chosen_on_held_out_images(localization_case, tmp_path):
    # c, d and e are localised. c calibrates: its heatmap's block is its box, found at both value
    # alphas (IoU 0.84 and 1.0), so the tie goes to the smaller, 0.1. Test: e (same heatmap and box)
    # right, d (box elsewhere) wrong: error 1/2.
    store, root, bbox = localization_case
    config = EvalConfig(step=64, workers=0, value_alphas=(0.1, 0.5), energy_alphas=(0.95,), mean_alphas=(1.0,),
                        box_kinds=("tight",), plots=False, alpha_split=["c"])
    result = evaluate_store(store, root, patch_classifier(), tmp_path / "out", boxes=bbox, config=config)
    split = result.summary["localization_split"]
    value = split["choices"][0]
    assert (value["method"], value["box_kind"], value["alpha"]) == ("value", "tight", 0.1)
    assert value["calibration_error"] == 0.0 and value["test_error"] == 0.5
    assert (split["n_calibration"], split["n_test"]) == (1, 2)
    assert [c["method"] for c in split["choices"]] == ["value", "energy", "mean"]
    t = result.table.set_index("path")
    assert t.loc["n00000001/c.png", "alpha_split"] == "calibration"
    assert t.loc["n00000001/d.png", "locerr_value_tight"] == 1.0 and t.loc["n00000002/e.png", "locerr_value_tight"] == 0.0
    assert result.summary["metrics"]["locerr_value_tight"] == {"mean": 0.5, "count": 2, "better": "lower",
                                                              "sem": pytest.approx(0.5)}
    on_disk = json.loads(result.paths["summary_json"].read_text())
    assert on_disk["localization_split"]["choices"][0]["test_error"] == 0.5
    assert "locerr_value_tight" in pd.read_csv(result.paths["summary_csv"])["metric"].tolist()
    with pytest.raises(ConfigError, match="needs ground-truth boxes"):
        evaluate_store(store, root, patch_classifier(), tmp_path / "none", config=config)
    # A split that leaves no test image is recorded; the rest of the report is still written.
    every = dataclasses.replace(config, alpha_split=("c", "d", "e"))
    result = evaluate_store(store, root, patch_classifier(), tmp_path / "all", boxes=bbox, config=every)
    assert "0 test" in result.summary["localization_split"]["error"]
    assert result.paths["per_image_parquet"].is_file() and "locerr_value_tight" not in result.table
    with pytest.raises(ConfigError, match="alpha_split"):
        EvalConfig(alpha_split=1.5)
