"""Amortised masks on a tiny classifier: a predictor trained on solved masks starts the solver lower
than the paper's uniform start; warm starts are reproducible; a killed training resumes to the
predictor an uninterrupted one gives; the files load with weights_only=True."""

import dataclasses
import json

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from torch import nn

from pipeline.amortise import (EXTENTS, TrainConfig, checkpoint_path, init_record, load_predictor, locate_taps, predict_masks,
                               train_predictor, warm_config, warm_solve)
from pipeline.amortise import train as train_module
from pipeline.amortise.predictor import PredictorConfig
from pipeline.config import override, preset
from pipeline.errors import ConfigError
from pipeline.imagenet import ClassVocabulary
from pipeline.jobs.run import RunConfig, run_masks
from pipeline.models import IMAGENET_MEAN, IMAGENET_STD, Classifier, frozen
from pipeline.solve import solve
from pipeline.store import MaskStore
from tests.helpers.models import torch_threads

SIZE = 64  # input side: the stride-8 grid, and so the mask, is 8 x 8
SETS = ["mask.size=8", "perturbation.sigma=4", "mask.smooth_sigma=2", "mask.jitter=1"]
PICTURES = ["chelsea", "coffee", "astronaut", "rocket", "immunohistochemistry", "colorwheel"]


class TinyNet(nn.Module):
    """Five stride-2 convolutions (64 px -> 2 x 2), global max pooling, a linear layer to 10 classes.
    No biases and zero-mean first filters: flat (perturbed) regions give no evidence, and the max
    pooling makes the evidence local, so that deleting a region matters (a random network with
    biases and average pooling scores a blurred image as the original)."""

    def __init__(self):
        super().__init__()
        widths = [3, 8, 16, 24, 32, 48]
        self.blocks = nn.Sequential(*[nn.Sequential(nn.Conv2d(a, b, 3, stride=2, padding=1, bias=False), nn.ReLU())
                                      for a, b in zip(widths, widths[1:])])
        with torch.no_grad():
            first = self.blocks[0][0].weight
            first.sub_(first.mean((1, 2, 3), keepdim=True)).mul_(4)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(48, 10, bias=False)

    def forward(self, x):
        return self.fc(self.pool(self.blocks(x)).flatten(1)) * 100  # scaled: a confident top-1


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    vocabulary = ClassVocabulary(wnids=tuple(f"n{i:08d}" for i in range(10)), names=tuple(map(str, range(10))))
    return Classifier(frozen(TinyNet()), "tiny-test", (SIZE, SIZE), IMAGENET_MEAN, IMAGENET_STD, vocabulary)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Six of scikit-image's pictures as a flat folder of 64 x 64 PNGs."""
    root = tmp_path_factory.mktemp("pictures")
    for name in PICTURES:
        array = getattr(skimage.data, name)()
        array = array[..., :3] if array.ndim == 3 else np.stack([array] * 3, -1)
        Image.fromarray(array).resize((SIZE, SIZE)).save(root / f"{name}.png")
    return root


def _images(folder):
    paths = sorted(folder.glob("*.png"))
    return torch.stack([torch.from_numpy(np.array(Image.open(p))).permute(2, 0, 1).float() / 255 for p in paths])


def _solver():
    return override(preset("paper-fast"), SETS)


def _quick(epochs=2, **kwargs):
    return TrainConfig(batch_size=4, lr=1e-2, target="top1", predictor=PredictorConfig(width=16), **kwargs), epochs


def test_taps_are_the_last_maps_at_strides_8_16_32_and_the_logit_layer(tiny):
    taps = locate_taps(tiny)
    assert taps.names == ("blocks.2", "blocks.3", "blocks")  # "blocks" exits last with blocks.4's output
    assert taps.channels == (24, 32, 48) and taps.linear == "fc" and taps.class_dim == 48 and taps.grid == 8


def test_a_predictor_trained_on_solved_masks_starts_the_solver_lower_than_the_uniform_start(tiny, folder, tmp_path):
    solver = _solver()
    store = tmp_path / "solved.h5"
    run_masks(folder, store, tiny, solver, RunConfig(batch_size=6, workers=0, progress=False))
    config, _ = _quick(loss="regression")
    out = tmp_path / "predictor.pt"
    train_predictor(folder, out, tiny, "paper-fast", 40, config=config, overrides=SETS, solved=store, progress=False)
    predictor = load_predictor(out, tiny)
    images = _images(folder)
    first = override(solver, ["optim.iterations=1"])
    starts = {}
    for name, init in (("uniform", None), ("predicted", predict_masks(predictor, tiny, images, first)[0])):
        losses = []
        solve(tiny, images, first, seeds=torch.arange(6), init=init, callback=lambda i, loss: losses.append(loss))
        starts[name] = losses[0]  # the objective of the starting masks (iteration 0's jitter)
    with MaskStore(store) as solved:
        wanted = solved.masks([solved.row_of_path(p.name) for p in sorted(folder.glob("*.png"))])
    predicted = predict_masks(predictor, tiny, images, solver)[0].cpu()
    assert (predicted - wanted).abs().mean() < 0.5 * (0.5 - wanted).abs().mean()  # it learnt the masks
    assert bool((starts["predicted"] < starts["uniform"]).all()), starts


def test_a_warm_started_solve_is_reproducible_bit_for_bit(tiny, folder, tmp_path):
    config, epochs = _quick()
    out = tmp_path / "predictor.pt"
    train_predictor(folder, out, tiny, "paper-fast", epochs, config=config, overrides=SETS, progress=False)
    predictor = load_predictor(out, tiny)
    images, solver = _images(folder), warm_config(_solver(), iterations=5)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = [warm_solve(tiny, images, predictor, solver, seeds=torch.arange(6)) for _ in range(2)]
    finally:
        torch.set_num_threads(threads)
    for field in ("masks", "loss", "p_final", "area"):
        assert torch.equal(getattr(runs[0], field), getattr(runs[1], field)), field
    # The solve really starts from the prediction: with a vanishing step it stays there.
    still = warm_config(_solver(), iterations=1, lr=1e-7)
    start, _ = predict_masks(predictor, tiny, images, still, extents=EXTENTS)  # warm_solve's default search
    moved = warm_solve(tiny, images, predictor, still, seeds=torch.arange(6)).masks
    assert (moved - start).abs().max() < 1e-5
    # The clean batch goes through the classifier once (the prediction, the extent search and the
    # solver share its forward pass).
    clean = tiny.normalize(images).contiguous(memory_format=torch.channels_last)
    seen = []
    hook = tiny.module.register_forward_pre_hook(lambda module, args: seen.append(torch.equal(args[0], clean)))
    try:
        warm_solve(tiny, images, predictor, still, seeds=torch.arange(6))
    finally:
        hook.remove()
    assert sum(seen) == 1, seen
    assert init_record(predictor)["predictor"] == predictor.identity == json.loads(
        torch.load(out, weights_only=True)["meta"])["identity"]


def test_warm_config_turns_the_l1_warm_up_off_or_fits_it_to_the_refinement():
    off = warm_config(preset("paper-fast"), iterations=25)
    assert off.optim.iterations == 25 and off.objective.l1_start == 1
    assert off.objective.l1_coeff == preset("paper-fast").objective.l1_coeff
    short = warm_config(preset("paper-fast"), iterations=10, l1_start=2.0)
    assert short.objective.l1_start == 2.0 and short.objective.l1_decay == 10
    with pytest.raises(ConfigError, match="deletion game"):
        warm_config(preset("extremal"))


def test_init_masks_of_the_wrong_shape_are_refused(tiny):
    with pytest.raises(ConfigError, match="init masks must be shaped"):
        solve(tiny, torch.rand(2, 3, SIZE, SIZE), _solver(), init=torch.rand(2, 1, 28, 28))


@pytest.mark.parametrize("checkpoint_every, killed_at", [(1, 3), (0, 3)])
def test_a_killed_training_resumes_to_the_uninterrupted_predictor(tiny, folder, tmp_path, monkeypatch,
                                                                   checkpoint_every, killed_at):
    """Killed after step 3 of 4 (2 epochs of 2 steps): with a checkpoint every step, nothing is
    redone; with checkpoints at epoch ends only, step 3 is redone. Either way the same predictor."""
    config, epochs = _quick(checkpoint_every=checkpoint_every)
    whole = tmp_path / "whole.pt"
    train_predictor(folder, whole, tiny, "paper-fast", epochs, config=config, overrides=SETS, progress=False)
    out = tmp_path / "resumed.pt"
    real, calls = train_module.train_step, []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == killed_at:
            raise KeyboardInterrupt  # as a kill: whatever the step did is lost
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", dying)
    with pytest.raises(KeyboardInterrupt):
        train_predictor(folder, out, tiny, "paper-fast", epochs, config=config, overrides=SETS, progress=False)
    assert checkpoint_path(out).exists() and not out.exists()
    torch.load(checkpoint_path(out), weights_only=True)  # plain tensors and JSON
    monkeypatch.setattr(train_module, "train_step", real)
    with pytest.raises(ConfigError, match="other settings"):  # a checkpoint is not resumed by another training
        train_predictor(folder, out, tiny, "paper-fast", epochs + 1, config=config, overrides=SETS, progress=False)
    summary = train_predictor(folder, out, tiny, "paper-fast", epochs, config=config, overrides=SETS,
                              progress=False)
    assert summary.resumed_at == (killed_at - 1 if checkpoint_every else 2)
    assert not checkpoint_path(out).exists()
    a, b = (torch.load(p, weights_only=True) for p in (whole, out))
    assert a["state"].keys() == b["state"].keys()
    for name in a["state"]:
        assert torch.equal(a["state"][name], b["state"][name]), name
    meta_a, meta_b = json.loads(a["meta"]), json.loads(b["meta"])
    assert meta_a["history"] == meta_b["history"] and meta_a["identity"] == meta_b["identity"]
    # Its provenance: the images (count and hash), the objective, the epochs, the classifier.
    assert meta_b["images"]["count"] == 6 and len(meta_b["images"]["sha256"]) == 64
    assert meta_b["solver"]["mask"]["size"] == 8 and meta_b["epochs"] == epochs and meta_b["classifier"] == "tiny-test"
    # A finished training reruns as a no-op.
    again = train_predictor(folder, out, tiny, "paper-fast", epochs, config=config, overrides=SETS, progress=False)
    assert again.identity == summary.identity and again.resumed_at is None


def test_a_predictor_is_refused_for_another_classifier(tiny, folder, tmp_path):
    config, _ = _quick()
    out = tmp_path / "p.pt"
    train_predictor(folder, out, tiny, "paper-fast", 1, config=config, overrides=SETS, progress=False)
    other = Classifier(tiny.module, "other", tiny.input_size, tiny.mean, tiny.std, tiny.vocabulary)
    with pytest.raises(ConfigError, match="trained for model 'tiny-test'"):
        load_predictor(out, other)
    with pytest.raises(ConfigError, match="does not exist"):
        load_predictor(tmp_path / "missing.pt", tiny)


def test_the_extent_search_picks_each_images_best_power_of_the_prediction(tiny, folder, tmp_path):
    from pipeline.amortise.warm import warm_problem
    from pipeline.solve import masks as masklib
    from pipeline.solve.problem import Problem, final_scores

    config, _ = _quick()
    out = tmp_path / "p.pt"
    train_predictor(folder, out, tiny, "paper-fast", 1, config=config, overrides=SETS, progress=False)
    predictor, images = load_predictor(out, tiny), _images(folder)
    solver = override(_solver(), ["perturbation.kind=noise"])  # the search scores with the solver's seeds
    raw, targets = predict_masks(predictor, tiny, images, solver)
    extents, seeds = (1.0, 4.0, 16.0), torch.arange(10, 16)
    problem, chosen = warm_problem(predictor, tiny, images, solver, seeds=seeds, extents=extents)
    assert torch.equal(problem.targets, targets) and torch.equal(problem.seeds, seeds)
    objective = solver.objective
    for i in range(len(images)):  # one image at a time, every power tried
        alone = Problem(tiny, images[i:i + 1], targets[i:i + 1], solver, seeds[i:i + 1])
        values = []
        for g in extents:
            p_final, _, tv = final_scores(alone, raw[i:i + 1] ** g)
            values.append(float(objective.l1_coeff * masklib.sparsity(raw[i:i + 1] ** g, objective)
                                + objective.tv_coeff * tv + p_final))
        best = extents[int(np.argmin(values))]
        assert torch.allclose(chosen[i], raw[i] ** best, atol=1e-6), (i, values)


# ---------------------------------------------------------------- dataset runs: --init and --amortise

FAST = ["optim.iterations=6"]  # the dataset-run tests: every stage short


def _fast():
    return override(preset("paper-fast"), SETS + FAST)


@pytest.fixture(scope="module")
def eight(tmp_path_factory, folder):
    """The six pictures and two more: eight 64 x 64 PNGs."""
    root = tmp_path_factory.mktemp("eight")
    for path in folder.glob("*.png"):
        (root / path.name).write_bytes(path.read_bytes())
    for name in ("camera", "coins"):
        array = getattr(skimage.data, name)()
        Image.fromarray(np.stack([array] * 3, -1)).resize((SIZE, SIZE)).save(root / f"{name}.png")
    return root


def _run(**kwargs):
    return RunConfig(batch_size=2, workers=0, progress=False, **kwargs)


def _same_store(a, b):
    with MaskStore(a) as x, MaskStore(b) as y:
        assert x.run_key == y.run_key and x.columns == y.columns
        tx, ty = x.table(), y.table()
        assert list(tx["index"]) == list(ty["index"])
        for name in x.columns:
            assert tx[name].equals(ty[name]), name
        assert torch.equal(x.masks(), y.masks())


def test_a_warm_started_run_is_reproducible_and_its_store_names_the_predictor(tiny, folder, tmp_path):
    from pipeline.amortise import load_warm_start
    from pipeline.errors import StoreError

    config, _ = _quick()
    paths = [tmp_path / "p.pt", tmp_path / "q.pt"]
    for seed, path in enumerate(paths):
        train_predictor(folder, path, tiny, "paper-fast", 1, config=dataclasses.replace(config, seed=seed),
                        overrides=SETS + FAST, progress=False)
    warm = load_warm_start(paths[0], tiny)
    solver = warm.adapt(_fast(), iterations=3)
    with torch_threads(1):
        for out in ("a.h5", "b.h5"):
            run_masks(folder, tmp_path / out, tiny, solver, _run(), init=warm)
    _same_store(tmp_path / "a.h5", tmp_path / "b.h5")
    with MaskStore(tmp_path / "a.h5") as store:
        record = store.config["init"]
        assert record["predictor"] == warm.predictor.identity and record["images"]["count"] == 6
        assert record["epochs"] == 1 and record["preset"] == "paper-fast"
        assert store.attrs["init_path"] == str(paths[0].resolve())
        assert store.config["solver"]["optim"]["iterations"] == 3 and store.config["solver"]["objective"].get("l1_start", 1) == 1
    other = load_warm_start(paths[1], tiny)
    assert other.predictor.identity != warm.predictor.identity
    with pytest.raises(StoreError):  # another predictor is another run: not resumed silently
        run_masks(folder, tmp_path / "a.h5", tiny, solver, _run(), init=other)
    with pytest.raises(ConfigError, match="early stopping"):
        run_masks(folder, tmp_path / "c.h5", tiny, override(solver, ["optim.stop_window=2"]), _run(), init=warm)


def _amortised(source, out, tiny):
    from pipeline.amortise import run_amortised

    with torch_threads(1):
        return run_amortised(source, out, tiny, _fast(), 4, _run(), iterations=3, epochs=3,
                             train=TrainConfig(batch_size=4, lr=1e-2, predictor=PredictorConfig(width=16)))


@pytest.fixture(scope="module")
def amortised_whole(tiny, eight, tmp_path_factory):
    """An uninterrupted ``--amortise 4`` run of the eight pictures."""
    out = tmp_path_factory.mktemp("whole") / "masks.h5"
    summary = _amortised(eight, out, tiny)
    return out, summary


def test_an_amortised_run_solves_the_first_k_fully_and_warm_starts_the_rest(tiny, eight, amortised_whole):
    from pipeline.amortise import amortise_folder

    out, summary = amortised_whole
    assert summary.total == 8 and summary.solved == 8 and summary.resumed == 0
    folder = amortise_folder(out)
    with MaskStore(out) as store, MaskStore(folder / "solved.h5") as first:
        assert sorted(store.column("index")) == list(range(8)) and len(first) == 4
        init = store.config["init"]
        assert init["amortise"] == 4 and init["first"]["optim"]["iterations"] == 6
        assert init["predictor"] == load_predictor(folder / "predictor.pt").identity
        assert init["images"]["count"] == 4  # trained on the first four only
        assert store.attrs["init_path"] == str((folder / "predictor.pt").resolve())  # outside the identity
        rows = [store.row_of_path(p) for p in first.column("path")]
        assert torch.equal(store.masks(rows), first.masks())  # the first four as solved
    again = _amortised(eight, out, tiny)  # complete: nothing redone
    assert again.solved == 0 and again.resumed == 8


@pytest.mark.parametrize("stage", ["solving the first images", "training", "warm solving"])
def test_an_amortised_run_killed_at_any_stage_resumes_to_the_uninterrupted_store(tiny, eight, amortised_whole,
                                                                                tmp_path, monkeypatch, stage):
    """A KeyboardInterrupt raised inside the second call of the stage's work (a batch solve, a training
    step, a warm solve) stands in for a kill: what that call did is lost; the rerun resumes."""
    from pipeline.amortise import WarmStart, amortise_folder
    from pipeline.jobs import run as run_module

    target, name = {"solving the first images": (run_module, "solve"), "training": (train_module, "train_step"),
                    "warm solving": (WarmStart, "solve")}[stage]
    real, calls = getattr(target, name), []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    out = tmp_path / "masks.h5"
    monkeypatch.setattr(target, name, dying)
    with pytest.raises(KeyboardInterrupt):
        _amortised(eight, out, tiny)
    monkeypatch.setattr(target, name, real)
    folder = amortise_folder(out)
    if stage == "training":
        assert checkpoint_path(folder / "predictor.pt").exists() and not (folder / "predictor.pt").exists()
    if stage == "warm solving":
        with MaskStore(out) as store:
            assert len(store) == 6  # the four copied and one batch of two warm-started
    summary = _amortised(eight, out, tiny)
    assert summary.resumed > 0
    _same_store(out, amortised_whole[0])


# ---------------------------------------------------------------- the commands

def _cli(args):
    from typer.testing import CliRunner

    from pipeline.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert "Traceback" not in result.output, result.output
    return result, errors


def test_the_commands_train_a_predictor_and_warm_start_a_store_from_it(tiny, folder, tmp_path, monkeypatch):
    monkeypatch.setattr("pipeline.cli._load_model", lambda spec, device: tiny)
    common = ["--model", "tiny-test", "-p", "paper-fast", *sum((["--set", s] for s in SETS + FAST), [])]
    predictors = []
    for seed in (0, 1):
        out = tmp_path / f"p{seed}.pt"
        result, errors = _cli(["train-predictor", folder, "--out", out, "--epochs", "1", "--target", "top1",
                               "--seed", seed, "-b", "4", *common])
        assert result.exit_code == 0 and not errors, result.output
        assert f"{out}: predictor " in result.output and "6 images x 1 epochs" in result.output
        meta = json.loads(torch.load(out, weights_only=True)["meta"])  # provenance, plain data
        assert meta["images"]["count"] == 6 and meta["epochs"] == 1 and meta["classifier"] == "tiny-test"
        assert meta["preset"] == "paper-fast" and meta["training"]["loss"] == "objective"
        predictors.append(out)
    store = tmp_path / "m.h5"
    solve_args = ["masks", folder, "--out", store, "-n", "2", "-b", "2", "--workers", "0", "--device", "cpu", *common]
    result, errors = _cli([*solve_args, "--init", predictors[0]])
    assert result.exit_code == 0 and not errors, result.output
    with MaskStore(store) as made:
        assert len(made) == 6 and made.config["init"]["predictor"] == load_predictor(predictors[0]).identity
        assert made.config["solver"]["optim"]["iterations"] == 2
    result, errors = _cli([*solve_args, "--init", predictors[0]])  # complete: nothing to do
    assert result.exit_code == 0 and "0 solved now, 6 already done" in result.output
    result, errors = _cli([*solve_args, "--init", predictors[1]])  # another predictor: refused, not resumed
    assert result.exit_code == 1 and len(errors) == 1, result.output
    # --amortise K through the command line, with its training's epochs
    amortised = tmp_path / "a.h5"
    result, errors = _cli(["masks", folder, "--out", amortised, "-n", "1", "-b", "2", "--workers", "0", "--device",
                           "cpu", "--amortise", "2", "--amortise-epochs", "2", *common])
    assert result.exit_code == 0 and not errors, result.output
    with MaskStore(amortised) as made:
        assert len(made) == 6 and made.config["init"]["amortise"] == 2 and made.config["init"]["epochs"] == 2


@pytest.mark.parametrize("args, message", [
    (["train-predictor", "{missing}", "--out", "{tmp}/p.pt"], "does not exist"),
    (["train-predictor", "{folder}", "--out", "{tmp}/p.pt", "--loss", "regression"], "solved"),
    (["train-predictor", "{folder}", "--out", "{tmp}/p.pt", "--loss", "bogus"], "loss"),
    (["masks", "{folder}", "--out", "{tmp}/m.h5", "--init", "{tmp}/none.pt"], "does not exist"),
    (["masks", "{folder}", "--out", "{tmp}/m.h5", "--init", "{tmp}/p.pt", "--amortise", "2"], "give one of them"),
    (["masks", "{folder}", "--out", "{tmp}/m.h5", "--amortise", "0"], "--amortise K"),
    (["masks", "{folder}", "--out", "{tmp}/m.h5", "--amortise", "2", "-p", "extremal"], "deletion game"),
    (["masks", "{folder}", "--out", "{tmp}/m.h5", "--amortise-epochs", "3"], "give --amortise too"),
    (["masks", "{folder}", "--out", "{tmp}/m.h5", "--amortise", "2", "--amortise-epochs", "0"], "--amortise-epochs"),
])
def test_the_commands_refuse_bad_input_with_one_error_line(tiny, folder, tmp_path, monkeypatch, args, message):
    monkeypatch.setattr("pipeline.cli._load_model", lambda spec, device: tiny)
    values = {"missing": tmp_path / "missing", "tmp": tmp_path, "folder": folder}
    result, errors = _cli([a.format(**values) for a in args] + ["--model", "tiny-test"])
    assert result.exit_code == 1 and len(errors) == 1 and message in errors[0], result.output
    assert not (tmp_path / "m.h5").exists() and not (tmp_path / "p.pt").exists()


def test_warm_config_names_what_it_changed():
    from pipeline.config import resolve

    warm = warm_config(resolve("paper-fast", [], 20), iterations=10)
    assert warm.origin.preset == "paper-fast"
    assert warm.origin.overrides[-3:] == ("optim.iterations=10", "objective.l1_start=1", "objective.l1_decay=50")
    assert override(preset("paper-fast"), list(warm.origin.overrides)) == warm  # the name rebuilds it
