"""The package's shape: a CLI that starts without torch, a public API, options typed and
documented, no private name crossing a subpackage, and the example script running end to end."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

import pipeline
from pipeline.cli import app
from pipeline.config import preset
from pipeline.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _fresh(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_importing_the_cli_and_the_package_does_not_import_torch():
    out = _fresh("import sys, pipeline, pipeline.cli; print(sorted(m for m in sys.modules if m.split('.')[0] "
                 "in ('torch', 'torchvision', 'timm', 'pandas', 'h5py')))")
    assert out.strip() == "[]"


def test_every_public_name_resolves_and_is_listed():
    assert pipeline.__all__ == sorted(set(pipeline.__all__))
    for name in pipeline.__all__:
        assert getattr(pipeline, name) is not None
    with pytest.raises(AttributeError):
        pipeline.not_a_name  # noqa: B018


def test_every_option_has_help_and_choices_are_listed():
    command = typer.main.get_command(app)
    for name, sub in command.commands.items():
        for param in sub.params:
            assert getattr(param, "help", None), f"perturb {name}: {param.name} has no help"
    runner = CliRunner()
    for name in ("masks", "baseline", "sweep"):
        text = runner.invoke(app, [name, "--help"], env={"COLUMNS": "200"}).output
        assert "top1|label" in text, name
        args = [name, "random", "data", "--target", "nope"] if name == "baseline" else [name, "data", "--target", "nope"]
        refused = runner.invoke(app, args)
        assert refused.exit_code == 2 and "nope" in refused.output
    text = runner.invoke(app, ["baseline", "--help"], env={"COLUMNS": "200"}).output
    assert all(name in text for name in ("centre", "random", "gradient", "gradcam", "center"))
    unknown = runner.invoke(app, ["baseline", "smooth", "data"])
    assert unknown.exit_code == 1 and "unknown saliency method 'smooth'" in unknown.output


def test_defaults_named_in_help_are_the_librarys():
    from pipeline.data import MAX_DECODED_PIXELS
    from pipeline.evaluation import EvalConfig
    from pipeline.jobs.run import RunConfig

    command = typer.main.get_command(app)

    def stated(command_name: str, option: str) -> int:
        param = next(p for p in command.commands[command_name].params if p.name == option)
        assert param.default is None  # unset options are not passed: the library's default applies
        return int(re.search(r"default: [^0-9]*([0-9,]+)", param.help).group(1).replace(",", ""))

    assert stated("masks", "max_pixels") == MAX_DECODED_PIXELS == RunConfig().max_pixels
    assert stated("masks", "seed") == RunConfig().seed
    for name in ("baseline", "sweep"):
        assert stated(name, "workers") == RunConfig().workers
    assert stated("evaluate", "step") == EvalConfig().step
    assert stated("evaluate", "workers") == EvalConfig().workers
    # --batch-size is "auto" everywhere, with one meaning: on a CPU, the library's default
    from pipeline.cli import _fixed_batch

    for name in ("masks", "baseline", "sweep", "evaluate", "import"):
        assert next(p for p in command.commands[name].params if p.name == "batch_size").default == "auto"
    assert _fixed_batch("auto", "cpu") == RunConfig().batch_size == EvalConfig().batch_size


def test_renamed_presets_say_their_new_name():
    assert preset("jacobgil").perturbation.kind == "jacobgil-average"
    for old, new in (("seed", "jacobgil"), ("seed-code", "jacobgil-code")):
        with pytest.raises(ConfigError, match=f"now called '{new}'"):
            preset(old)


def _imports(path: Path):
    """``(module imported, name)`` of every ``from X import name`` in ``path``, resolved."""
    package = list(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                yield module, alias.name


def test_no_private_name_crosses_a_subpackage():
    crossing = []
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        here = ".".join(path.relative_to(ROOT).parts[:2]) if path.parent != ROOT / "pipeline" else None
        for module, name in _imports(path):
            if not module.startswith("pipeline") or not name.startswith("_") or name.startswith("__"):
                continue
            there = ".".join(module.split(".")[:2]) if (ROOT / Path(*module.split(".")[:2])).is_dir() else None
            if here is None or here != there:
                crossing.append(f"{path.relative_to(ROOT)}: from {module} import {name}")
    assert not crossing, crossing


def test_no_test_imports_a_test_module_or_a_benchmark():
    """Shared fixtures live in conftest.py files and tests/helpers, so each test file stands alone."""
    found = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            found += [f"{path.relative_to(ROOT)}: {m}" for m in modules if m.startswith("benchmarks")
                      or (m.startswith("tests.") and m.split(".")[-1].startswith("test_"))]
    assert not found, found


@pytest.mark.slow
def test_the_example_runs_on_the_public_api(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "explain_folder.py"), "--out", str(tmp_path),
                             "--iterations", "2", "--limit", "2"], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    assert "2 images; 2 solved now" in result.stdout and "masks (2, 1, 28, 28)" in result.stdout
    assert re.search(r"insertion_auc 0\.\d{4}", result.stdout)
    assert (tmp_path / "evaluation" / "summary.json").is_file()
