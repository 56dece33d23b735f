"""``perturb randomisation`` on the command line: a TorchScript model cannot be re-initialised
(one error line, nothing written), a missing store is one error line, and Ctrl-C says what is kept."""

from typer.testing import CliRunner

from pipeline.cli import app

runner = CliRunner()


def test_torchscript_model_is_refused_in_one_line(imagenet_folder, tiny_model, tmp_path, one_thread):
    store = tmp_path / "gradient.h5"
    made = runner.invoke(app, ["baseline", "gradient", str(imagenet_folder), "--out", str(store), "--model",
                               tiny_model, "--workers", "0", "--limit", "2"])
    assert made.exit_code == 0, made.output
    result = runner.invoke(app, ["randomisation", str(store), "--out", str(tmp_path / "rand"), "--limit", "2"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("error: a TorchScript model cannot be re-initialised")
    assert not (tmp_path / "rand" / "randomisation.json").exists()


def test_missing_store_is_one_error_line(tmp_path):
    result = runner.invoke(app, ["randomisation", str(tmp_path / "none.h5"), "--out", str(tmp_path / "rand")])
    assert result.exit_code == 1
    assert [line for line in result.output.splitlines() if line.strip()][0].startswith("error:")


def test_an_interrupted_check_says_what_it_keeps(imagenet_folder, tiny_model, tmp_path, one_thread, monkeypatch):
    import pipeline.jobs.randomisation

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    store = tmp_path / "centre.h5"
    made = runner.invoke(app, ["baseline", "centre", str(imagenet_folder), "--out", str(store), "--model",
                               tiny_model, "--workers", "0", "--limit", "1"])
    assert made.exit_code == 0, made.output
    monkeypatch.setattr(pipeline.jobs.randomisation, "randomise_store", interrupt)
    result = runner.invoke(app, ["randomisation", str(store), "--out", str(tmp_path / "rand")])
    assert result.exit_code == 130
    last = [line for line in result.output.splitlines() if line.strip()][-1]
    assert last.startswith("interrupted: the similarities of the finished batches") and "resumes the check" in last
