"""Every command, given a missing path, an empty folder or an invalid option value, answers with one
`error:` line and the documented exit status (1 for an error of the input, 2 for a command line that
does not parse), prints no traceback and leaves no file that changes the next run."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app

runner = CliRunner()

# command -> (arguments with MISSING, arguments with EMPTY (an empty folder), an invalid option value)
COMMANDS = {
    "masks": (["masks", "{missing}", "--out", "{out}/m.h5"], ["masks", "{empty}", "--out", "{out}/m.h5"],
              ["masks", "{empty}", "--out", "{out}/m.h5", "--target", "top5"]),
    "masks --set": (None, None, ["masks", "{empty}", "--out", "{out}/m.h5", "--set", "optim.iterations=1.5"]),
    "baseline": (["baseline", "random", "{missing}", "--out", "{out}/b.h5"],
                 ["baseline", "random", "{empty}", "--out", "{out}/b.h5"],
                 ["baseline", "nosuchmethod", "{empty}", "--out", "{out}/b.h5"]),
    "sweep": (["sweep", "{missing}", "-p", "paper", "--out", "{out}/s"], ["sweep", "{empty}", "-p", "paper", "--out", "{out}/s"],
              ["sweep", "{empty}", "-p", "nosuchpreset", "--out", "{out}/s"]),
    "explain": (["explain", "{missing}.jpg", "--out", "{out}/x"], ["explain", "{empty}", "--out", "{out}/x"],
                ["explain", "{missing}.jpg", "-n", "abc"]),
    "inspect": (["inspect", "{missing}.h5"], ["inspect", "{empty}"], ["inspect", "{missing}.h5", "--bogus"]),
    "repair": (["repair", "{missing}.h5"], ["repair", "{empty}"], ["repair", "{missing}.h5", "--bogus"]),
    "merge": (["merge", "{missing}.h5"], ["merge", "{empty}"], ["merge", "{missing}.h5", "--bogus"]),
    "export": (["export", "{missing}.h5", "--out", "{out}/e"], ["export", "{empty}", "--out", "{out}/e"],
               ["export", "{missing}.h5", "--limit", "abc"]),
    "evaluate": (["evaluate", "{missing}.h5", "--out", "{out}/v"], ["evaluate", "{empty}", "--out", "{out}/v"],
                 ["evaluate", "{missing}.h5", "--out", "{out}/v", "--step", "abc"]),
    "compare": (["compare", "{missing}", "--out", "{out}/c"], ["compare", "{empty}", "--out", "{out}/c"],
                ["compare", "{missing}", "--n-boot", "abc"]),
    "report": (["report", "{missing}", "--out", "{out}/r.html"], ["report", "{empty}", "--out", "{out}/r.html"],
               ["report", "{missing}", "--gallery", "abc"]),
    "import": (["import", "{missing}", "--data", "{empty}", "--method", "m", "--out", "{out}/i.h5"],
               ["import", "{empty}", "--data", "{empty}", "--method", "m", "--out", "{out}/i.h5"],
               ["import", "{missing}", "--data", "{empty}", "--out", "{out}/i.h5", "--bogus"]),
    "train-predictor": (["train-predictor", "{missing}", "--out", "{out}/p.pt"],
                        ["train-predictor", "{empty}", "--out", "{out}/p.pt"],
                        ["train-predictor", "{missing}", "--out", "{out}/p.pt", "--epochs", "abc"]),
    "randomisation": (["randomisation", "{missing}.h5", "--out", "{out}/z"], ["randomisation", "{empty}", "--out", "{out}/z"],
                      ["randomisation", "{missing}.h5", "--out", "{out}/z", "--limit", "abc"]),
}
NO_INPUT = {"models", "presets", "demo"}
"""Commands that read no user path (the demo's images are built in)."""
CASES = [(name, kind, args) for name, cases in COMMANDS.items()
         for kind, args in zip(("missing", "empty", "invalid"), cases) if args is not None]


def test_every_command_reading_a_path_is_walked():
    names = {command.name or command.callback.__name__ for command in app.registered_commands}
    assert names - NO_INPUT <= {name.split()[0] for name in COMMANDS}, sorted(names - NO_INPUT)


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("name,kind,args", CASES, ids=[f"{n}-{k}" for n, k, _ in CASES])
def test_every_command_fails_with_one_error_line(tmp_path, name, kind, args):
    (tmp_path / "empty").mkdir()
    (tmp_path / "out").mkdir()
    values = {"missing": str(tmp_path / "missing"), "empty": str(tmp_path / "empty"), "out": str(tmp_path / "out")}
    before = _files(tmp_path)
    result = runner.invoke(app, [a.format(**values) for a in args])
    output = result.output
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, output
    assert "Traceback" not in output and "╭" not in output, output
    assert result.exit_code == (2 if kind == "invalid" and name not in ("masks --set", "baseline", "sweep") else 1), output
    assert _files(tmp_path) == before, "a failed command left files behind"


def test_a_run_that_fails_before_its_first_batch_leaves_no_store(tmp_path, monkeypatch):
    from pipeline.store import MaskWriter

    path = tmp_path / "m.h5"
    with pytest.raises(RuntimeError):
        with MaskWriter(path, {"a": 1}, "model", tmp_path, (1, 2, 2)):
            raise RuntimeError("the model failed before any batch")
    assert not path.exists(), "an empty store would refuse the corrected command"
    with MaskWriter(path, {"a": 2}, "model", tmp_path, (1, 2, 2)):
        pass  # a store with no batch, closed normally, stays (a resume of it changes nothing)
    assert path.exists()
    with pytest.raises(RuntimeError):
        with MaskWriter(path, {"a": 2}, "model", tmp_path, (1, 2, 2)):
            raise RuntimeError("a resumed store is never removed")
    assert path.exists()
