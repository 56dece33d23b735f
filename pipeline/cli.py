"""The ``perturb`` command line: parse, call one library function, render the result.

Every command turns :class:`pipeline.errors.PipelineError` into one red ``error:`` line and exit
code 1; a command line that does not parse (an unknown option, a bad choice) gives one ``error:``
line and exit code 2.
Importing this module does not import torch (each command imports what it runs), so ``perturb
--help`` answers at once. Options left unset are not passed on: the library's defaults apply
(``RunConfig``, ``EvalConfig``), so they are written once. One module for all commands: each is a
few lines of parsing around one library call, and reading them side by side keeps the option
names consistent.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
import typer.core
# typer ships its own copy of click; its exceptions are what a command line that does not parse raises.
from typer._click import exceptions as usage

from . import __version__
from .config import DEFAULT_PRESET, PRESETS
from .errors import PipelineError
from .methods import ALIASES, method_names
from .options import Target, choices

class _OneLineErrors(typer.core.TyperGroup):
    """Usage errors (an unknown option, a value outside its choices, a missing argument) as one
    ``error:`` line with exit status 2, like every other error of the tool (status 1), instead of
    click's boxed usage text."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except usage.NoArgsIsHelpError as error:
            typer.echo(error.ctx.get_help() if error.ctx else str(error))
            sys.exit(0)
        except usage.UsageError as error:
            where = f" (see `{error.ctx.command_path} -h`)" if error.ctx else ""
            message = error.format_message().replace("Value error, ", "")  # pydantic's prefix
            typer.secho(f"error: {message}{where}", fg=typer.colors.RED, err=True)
            sys.exit(2)
        except usage.ClickException as error:
            typer.secho(f"error: {error.format_message()}", fg=typer.colors.RED, err=True)
            sys.exit(error.exit_code)
        except typer.Abort:
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_OneLineErrors,
    name="perturb",
    help="Meaningful-perturbation saliency (Fong & Vedaldi 2017) for single images and whole datasets.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=False,
)

# Typer lists an Enum's values in --help and refuses any other value.
TargetChoice = enum.Enum("TargetChoice", {v: v for v in choices(Target)}, type=str)

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Model spec; see `perturb models`.")]
PresetOpt = Annotated[str, typer.Option("--preset", "-p", help=f"Solver preset: {', '.join(PRESETS)}; see "
                                        "`perturb presets`.")]
TargetOpt = Annotated[TargetChoice, typer.Option("--target", help="The class explained: top1 (the model's "
                                                 "prediction) or label (the folder's class).")]
TargetsOpt = Annotated[Optional[Path], typer.Option("--targets", help="A CSV with the columns path,class: the "
                                                   "class explained for each image (path relative to DATA; class "
                                                   "as an index, wnid or name), instead of --target.")]
BatchOpt = Annotated[str, typer.Option("--batch-size", "-b", help="Images processed together, or 'auto' (default): "
                                       "8 on a CPU; on a GPU, what fits its free memory (up to 128) for "
                                       "`masks`, and 32 for the other commands.")]
WorkersOpt = Annotated[Optional[int], typer.Option("--workers", "-w", help="Image-decoding processes, 0 = "
                                                   "in this process (default: 2).")]
DataArg = Annotated[Path, typer.Argument(help="Images: an ImageNet-style folder root/<wnid>/..., a flat folder, "
                                        "or a text file of paths.")]
AlphaSplitOpt = Annotated[Optional[str], typer.Option(
    "--alpha-split", help="The paper's protocol (needs --boxes): a fraction such as 0.5, or a text file "
    "listing image paths or stems, one a line: the images on which each threshold method's alpha is "
    "chosen, from a grid of alphas; localisation error is reported on the other images.")]
AlphaSplitSeedOpt = Annotated[int, typer.Option("--alpha-split-seed", help="Seed of a fractional --alpha-split.")]
LimitOpt = Annotated[Optional[int], typer.Option("--limit", help="Only the first N images (sorted by path).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing store made with another "
                                            "configuration.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a preset field, e.g. --set tv_coeff=0.05 (repeatable).")]
IterOpt = Annotated[Optional[int], typer.Option("--iterations", "-n", help="Solver iterations (default: the preset's).")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available).")]
ShardOpt = Annotated[Optional[str], typer.Option("--shard", help="I/N: do only the images with index % N == I, into "
                                                 "<out>.shards/ (default: from torchrun's RANK/WORLD_SIZE or a Slurm "
                                                 "array's task id, else everything).")]


_RESUMES = "mask stores keep every finished batch; the same command resumes them"
_INTERRUPTED = {"randomisation": "the similarities of the finished batches are written in --out; the same "
                                 "command resumes the check"}
"""What an interrupted command keeps, where it is not a resumable store."""


def _fail_cleanly(command: Callable) -> Callable:
    """Turn user-facing errors into one line on stderr and exit code 1 (Ctrl-C: 130)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except PipelineError as error:
            typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=1) from None
        except KeyboardInterrupt:
            # Stores have committed (and, on the way out, folded) every finished batch.
            typer.secho(f"interrupted: {_INTERRUPTED.get(command.__name__, _RESUMES)}", fg=typer.colors.YELLOW, err=True)
            raise typer.Exit(code=130) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"perturb {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = False) -> None:
    """Meaningful-perturbation saliency at dataset scale."""


def _device(device: str | None) -> str:
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PipelineError(f"--device {device} asked for CUDA, but torch sees no GPU here; use --device cpu")
    return device


AUTO_OTHER_GPU = 32
"""``--batch-size auto`` of the commands other than ``masks`` on a GPU (evaluation, baselines)."""


def _fixed_batch(text: str | int, device: str) -> int:
    """``--batch-size`` of a command that does not measure its memory: ``auto`` is 8 on a CPU (the
    fastest measured there) and :data:`AUTO_OTHER_GPU` on a GPU."""
    size = _batch_size(text)
    if size != "auto":
        return size
    return 8 if device == "cpu" else AUTO_OTHER_GPU


def _batch_size(text: str | int) -> int | str:
    if str(text).strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise PipelineError(f"--batch-size {text!r} must be a positive integer or 'auto'") from None


def _given(**options: Any) -> dict[str, Any]:
    """The options the user set (None: unset, so the library's default applies); Enums as values."""
    return {name: value.value if isinstance(value, enum.Enum) else value
            for name, value in options.items() if value is not None}


def _load_model(spec: str, device: str):
    """Load the classifier, saying so while it loads (a few seconds on a CPU)."""
    from .models import load_model

    if sys.stderr.isatty():  # a person waiting at a terminal; logs and pipes get no progress line
        typer.echo(f"loading {spec} on {device} ...", err=True)
    return load_model(spec, device=device)


def _targets(path: Path | None, data: Path, limit: int | None):
    """The ``--targets`` table read and checked against ``data`` (None when not given); before the
    model loads, so a bad file costs nothing."""
    if path is None:
        return None
    from .data.targets import read_targets

    return read_targets(path, data, limit=limit)


def _solver_config(preset_name: str, assignments: list[str] | None, iterations: int | None):
    from .config import resolve

    return resolve(preset_name, assignments or (), iterations)


@app.command()
@_fail_cleanly
def explain(
    image: Annotated[Path, typer.Argument(help="Image file to explain.")],
    model: ModelOpt = "efficientnet_lite0",
    target: Annotated[Optional[str], typer.Option("--target", "-t", help="The class explained: top1 (the "
                                                  "prediction, default), or a class index, wnid or name.")] = None,
    preset: PresetOpt = DEFAULT_PRESET,
    iterations: IterOpt = None,
    set_: SetOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for heatmap.png, mask.png, cam.png, perturbated.png.")] = Path("explanation"),
    device: DeviceOpt = None,
) -> None:
    """Explain one image: solve its mask and write jacobgil's four pictures."""
    from .jobs.explain import explain_image
    from .models import load_model

    config = _solver_config(preset, set_, iterations)
    classifier = load_model(model, device=_device(device))
    index = None if target in (None, "top1") else classifier.vocabulary.resolve(target)
    result = explain_image(image, classifier, config, out, target=index, progress=True)
    r = result.result
    typer.echo(f"class        {int(r.targets[0])} {classifier.vocabulary.wnids[int(r.targets[0])]} {result.class_name}")
    typer.echo(f"p original   {float(r.p_original[0]):.4f}")
    typer.echo(f"p perturbed  {float(r.p_perturbed[0]):.4f}   (whole image perturbed)")
    typer.echo(f"p final      {float(r.p_final[0]):.4f}   (through the mask, no noise)")
    typer.echo(f"mask area    {float(r.area[0]):.3f}   (share perturbed)")
    typer.echo(f"wrote        {', '.join(str(p) for p in result.files)}")


@app.command()
@_fail_cleanly
def models(
    layers: Annotated[Optional[str], typer.Option("--layers", help="List this model's layers with a spatial output "
                                                  "(the --layer of layer methods); * marks the default.")] = None,
) -> None:
    """List the model specs that can be loaded, or one model's layers (--layers MODEL)."""
    if layers is None:
        from .models import builtin_models

        for spec, text in builtin_models().items():
            typer.echo(f"{spec:22s} {text}")
        return
    from .methods.layers import layer_listing

    for line in layer_listing(_load_model(layers, "cpu")):
        typer.echo(line)


@app.command()
def presets() -> None:
    """List the solver presets and their main settings (* marks the default)."""
    from .config import preset_rows

    rows = preset_rows()
    widths = {key: max(len(key), *(len(row[key]) for row in rows)) for key in rows[0]}
    typer.echo("  ".join(key.ljust(width) for key, width in widths.items()).rstrip())
    for row in rows:
        typer.echo("  ".join(row[key].ljust(width) for key, width in widths.items()).rstrip())
    typer.echo("* the default. -n N scales an L1 warm-up with the run (paper-fast -n 20: over 20); "
               "`perturb masks --set KEY=VALUE` overrides any field.")


@app.command()
@_fail_cleanly
def masks(
    data: DataArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="HDF5 store to write (resumed when it exists).")] = Path("masks.h5"),
    model: ModelOpt = "efficientnet_lite0",
    preset: PresetOpt = DEFAULT_PRESET,
    iterations: IterOpt = None,
    set_: SetOpt = None,
    batch_size: Annotated[str, typer.Option("--batch-size", "-b", help="Images solved together, or 'auto': "
                                            "what fits the GPU's free memory (up to 128); 8 on a CPU.")] = "auto",
    workers: WorkersOpt = None,
    limit: LimitOpt = None,
    target: TargetOpt = TargetChoice.top1,
    targets: TargetsOpt = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Offset of every image's random stream "
                                                "(default: 0).")] = None,
    device: DeviceOpt = None,
    overwrite: OverwriteOpt = False,
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the model: about 2x faster on a GPU "
                                           "after a compile of tens of seconds; slower on a CPU.")] = False,
    max_pixels: Annotated[Optional[int], typer.Option("--max-pixels", help="Skip as 'too large' an image that "
                                                      "would decode to more pixels (JPEGs decode at up to 1/8 "
                                                      "scale; default: 250,000,000).")] = None,
    shard_: ShardOpt = None,
    init: Annotated[Optional[Path], typer.Option("--init", help="A predictor file (`perturb train-predictor`): "
                                                 "every image starts from its mask and is refined for the "
                                                 "preset's iterations (-n to shorten), without the L1 warm-up.")] = None,
    amortise: Annotated[Optional[int], typer.Option("--amortise", help="K: solve the first K images fully, train a "
                                                    "predictor on them (in <out>.amortise/), warm-start the rest "
                                                    "and refine them for -n iterations (default 25).")] = None,
    amortise_epochs: Annotated[Optional[int], typer.Option("--amortise-epochs", help="With --amortise: the "
                                                           "predictor's epochs over the first K images "
                                                           "(default: 100).")] = None,
) -> None:
    """Solve the masks of a whole folder in batches and store them in HDF5 (resumable).

    Under torchrun or a Slurm array each process solves its shard; see `perturb merge`.
    """
    from .distributed import resolve_shard
    from .jobs.preflight import preflight
    from .jobs.settings import RunConfig, store_config

    if init is not None and amortise is not None:
        raise PipelineError("--init and --amortise both choose the start; give one of them")
    if amortise_epochs is not None and amortise is None:
        raise PipelineError("--amortise-epochs sets the training of --amortise K; give --amortise too")
    config = _solver_config(preset, set_, None if amortise is not None else iterations)
    run = RunConfig(batch_size=_batch_size(batch_size), compile=compile_, targets=_targets(targets, data, limit),
                    **_given(workers=workers, limit=limit, target=target, seed=seed, max_pixels=max_pixels))
    shard = resolve_shard(shard_)
    if amortise is not None:
        preflight(data, limit=run.limit)  # a bad DATA fails before the model loads
        from .amortise import AMORTISE_EPOCHS, REFINE_ITERATIONS, run_amortised

        classifier = _load_model(model, _device(device))
        epochs = AMORTISE_EPOCHS if amortise_epochs is None else amortise_epochs
        summary = run_amortised(data, out, classifier, config, amortise, run, iterations=iterations or REFINE_ITERATIONS,
                                epochs=epochs, overwrite=overwrite, shard=shard)
        for line in summary.lines():
            typer.echo(line)
        return
    recorded = store_config(config, run, model, (0, 0))
    warm = None
    if init is not None:
        from .amortise import load_warm_start

        warm = load_warm_start(init)
        config = warm.adapt(config)
        recorded = warm.configure(store_config(config, run, model, (0, 0)))
    checked = preflight(data, out, recorded, run.limit, overwrite, shard.sharded)
    if checked.complete:  # nothing to solve: no model to load
        for line in checked.lines(out):
            typer.echo(line)
        return
    from .jobs.run import run_masks

    classifier = _load_model(model, shard.device(_device(device)))
    if warm is not None:
        warm = warm.on(classifier)  # checked against the model, on its device
    summary = run_masks(data, out, classifier, config, run, overwrite=overwrite, shard=shard, init=warm)
    for line in summary.lines():
        typer.echo(line)


@app.command("train-predictor")
@_fail_cleanly
def train_predictor(
    data: DataArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="The predictor file to write (a killed training "
                                      "resumes from <out>.partial).")] = Path("predictor.pt"),
    solved: Annotated[Optional[list[Path]], typer.Option("--solved", help="A mask store of (some of) these "
                                                         "images (repeatable): the predictor regresses onto "
                                                         "its masks.")] = None,
    loss: Annotated[str, typer.Option("--loss", help="auto (regression with --solved, else objective), "
                                      "objective, regression or both.")] = "auto",
    epochs: Annotated[int, typer.Option("--epochs", "-e", help="Passes over the images.")] = 100,
    model: ModelOpt = "efficientnet_lite0",
    preset: PresetOpt = DEFAULT_PRESET,
    set_: SetOpt = None,
    target: TargetOpt = TargetChoice.label,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Images per training step.")] = 8,
    lr: Annotated[float, typer.Option("--lr", help="Adam's step on the predictor.")] = 1e-3,
    seed: Annotated[int, typer.Option("--seed", help="Initial weights, image order, random streams.")] = 0,
    limit: LimitOpt = None,
    device: DeviceOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Train a mask predictor on a folder of images, for `perturb masks --init` (resumable)."""
    from .jobs.preflight import preflight

    preflight(data, limit=limit)  # a bad DATA fails before the model loads
    from .amortise import TrainConfig, train_predictor as train

    config = TrainConfig(loss=loss, batch_size=batch_size, lr=lr, seed=seed, target=_given(target=target)["target"],
                         checkpoint_every=25)
    classifier = _load_model(model, _device(device))
    summary = train(data, out, classifier, preset, epochs, config=config, overrides=set_ or (),
                    solved=solved or None, limit=limit, overwrite=overwrite)
    for line in summary.lines():
        typer.echo(line)


@app.command()
@_fail_cleanly
def inspect(store: Annotated[Path, typer.Argument(help="HDF5 mask store.")]) -> None:
    """Summarise a mask store: counts, skips by reason, configuration, mean probabilities.

    For a sharded run not merged yet, the progress of each shard.
    """
    from .jobs.inspect import inspect_lines

    for line in inspect_lines(store):
        typer.echo(line)


@app.command()
@_fail_cleanly
def repair(store: Annotated[Path, typer.Argument(help="HDF5 mask store that reads with an error.")]) -> None:
    """Rebuild a damaged mask store from every row it still holds (damaged files are kept aside)."""
    from .store.repair import repair_store

    for line in repair_store(store).lines():
        typer.echo(line)


@app.command()
@_fail_cleanly
def merge(
    out: Annotated[Path, typer.Argument(help="The --out of a sharded `perturb masks`, `baseline` or `evaluate` run.")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT if it exists.")] = False,
    keep_shards: Annotated[bool, typer.Option("--keep-shards", help="Keep <out>.shards/ after merging.")] = False,
) -> None:
    """Merge the shards of a sharded run (<out>.shards/) into OUT, once every shard is complete."""
    from .jobs.shards import merge_run

    for line in merge_run(out, overwrite=overwrite, keep_shards=keep_shards).lines():
        typer.echo(line)


@app.command()
@_fail_cleanly
def export(
    store: Annotated[Path, typer.Argument(help="HDF5 mask store.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the PNGs.")] = Path("export"),
    row: Annotated[Optional[list[int]], typer.Option("--row", help="Store row to export (repeatable; default: the first --limit).")] = None,
    limit: Annotated[int, typer.Option("--limit", help="How many images when no --row is given.")] = 16,
    data: Annotated[Optional[Path], typer.Option("--data", help="Image root (default: the store's recorded source).")] = None,
) -> None:
    """Write heatmap and overlay PNGs of stored masks at each image's original size."""
    from .report.export import export_pictures

    files = export_pictures(store, out, rows=row, data_root=data, limit=limit)
    typer.echo(f"wrote {len(files)} pictures to {out}")


BoxesOpt = Annotated[Optional[Path], typer.Option("--boxes", help="Ground-truth boxes: a VOC XML folder or Kaggle LOC_val_solution.csv.")]
StepOpt = Annotated[Optional[int], typer.Option("--step", help="Pixels per deletion/insertion step (default: "
                                                "RISE's 1792 at 224 px).")]


def _alpha_split(text: str | None) -> float | tuple[str, ...] | None:
    """``--alpha-split``: a fraction, or a file of image paths/stems (one a line)."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    path = Path(text)
    if not path.is_file():
        raise PipelineError(f"--alpha-split {text!r} is neither a fraction (e.g. 0.5) nor a file listing images")
    names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if not names:
        raise PipelineError(f"--alpha-split file {text!r} lists no image")
    return names


def _key_value(text: str, form: str, method: bool = False, flag: str = "--opt") -> tuple[str, str]:
    """One ``--opt`` (or ``flag``) as ``(key, value)``, stripped (``method``: the key must be ``METHOD:KEY``)."""
    key, sep, value = text.partition("=")
    name, colon, member = key.rpartition(":")
    if not sep or not key.strip() or (method and not (colon and name.strip() and member.strip())):
        raise PipelineError(f"{flag} {text!r} must be {form}")
    return key.strip(), value.strip()


def _method_options(assignments: list[str] | None, layer: str | None = None) -> dict[str, str]:
    """``--opt KEY=VALUE`` (and ``--layer NAME``) as ``{key: "value"}``; the method coerces the values."""
    options = dict(_key_value(text, "KEY=VALUE, e.g. --opt n_steps=32") for text in assignments or ())
    if layer is not None:
        options["layer"] = layer
    return options


@app.command()
@_fail_cleanly
def baseline(
    name: Annotated[str, typer.Argument(help=f"The saliency method: {', '.join([*method_names(), *ALIASES])} "
                                       "(docs/methods.md).")],
    data: DataArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="HDF5 store to write (resumed when it exists).")] = Path("baseline.h5"),
    model: ModelOpt = "efficientnet_lite0",
    batch_size: BatchOpt = "auto",
    workers: WorkersOpt = None,
    limit: LimitOpt = None,
    target: TargetOpt = TargetChoice.top1,
    targets: TargetsOpt = None,
    device: DeviceOpt = None,
    overwrite: OverwriteOpt = False,
    shard_: ShardOpt = None,
    opt: Annotated[Optional[list[str]], typer.Option("--opt", help="A method option, e.g. --opt n_steps=32 "
                                                     "(repeatable); an unknown name lists the method's options.")] = None,
    layer: Annotated[Optional[str], typer.Option("--layer", help="The layer of a layer method (Grad-CAM, cam:*, "
                                                 "excitation backprop); see `perturb models --layers MODEL`.")] = None,
) -> None:
    """Write a saliency method's maps in the mask-store format (for the same metrics).

    Under torchrun or a Slurm array each process computes its shard; see `perturb merge`.
    """
    from .distributed import resolve_shard
    from .jobs.baselines import checked_method, run_baseline
    from .jobs.preflight import preflight
    from .jobs.run import RunConfig

    options = _method_options(opt, layer)
    checked_method(name, None, options)  # an unknown method or option fails before the model loads
    shard = resolve_shard(shard_)
    preflight(data, limit=limit)  # a bad path is said before the model loads
    on = shard.device(_device(device))
    run = RunConfig(batch_size=_fixed_batch(batch_size, on), targets=_targets(targets, data, limit),
                    **_given(workers=workers, limit=limit, target=target))
    classifier = _load_model(model, on)
    summary = run_baseline(name, data, out, classifier, run, overwrite=overwrite, shard=shard, options=options)
    for line in summary.lines():
        typer.echo(line)


@app.command("import")
@_fail_cleanly
def import_(
    maps: Annotated[Path, typer.Argument(help="Saliency maps made by another tool: a folder of .npy or greyscale "
                                         "PNG files named like the images, one .npz keyed by relative path, or an "
                                         "HDF5 file with a path column.")],
    data: Annotated[Path, typer.Option("--data", help="The images the maps explain (as `perturb masks` takes them).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="HDF5 store to write (resumed when it exists).")],
    method: Annotated[str, typer.Option("--method", help="The method's name, recorded in the store "
                                        "(e.g. captum-saliency).")],
    model: ModelOpt = "efficientnet_lite0",
    sign: Annotated[str, typer.Option("--sign", help="Signed values: abs (|v|, default), positive (max(v, 0)) "
                                      "or raw (as they are).")] = "abs",
    channels: Annotated[str, typer.Option("--channels", help="A channel axis reduced by max (default), sum or "
                                          "mean.")] = "max",
    target: TargetOpt = TargetChoice.top1,
    batch_size: BatchOpt = "auto",
    workers: WorkersOpt = None,
    limit: LimitOpt = None,
    device: DeviceOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Store saliency maps made by any other tool, for `evaluate`, `compare` and `report`.

    Maps are matched to images and checked before the model loads; see docs in the README.
    """
    from .jobs.importing import import_maps
    from .jobs.run import RunConfig

    on = _device(device)
    run = RunConfig(batch_size=_fixed_batch(batch_size, on), **_given(workers=workers, limit=limit, target=target))
    summary = import_maps(maps, data, out, model, method=method, run=run, sign=sign, channels=channels,
                          overwrite=overwrite, device=on)
    for line in summary.lines():
        typer.echo(line)


MetricsOpt = Annotated[Optional[str], typer.Option(
    "--metrics", help="Comma-separated metrics: deletion, insertion, localisation, pointing (the default set; "
    "the last two with --boxes), road, complexity; e.g. --metrics deletion,road,complexity (docs/metrics.md).")]


def _percentages(text: str | None) -> tuple[float, ...] | None:
    """``"10,20,30"`` as fractions ``(0.1, 0.2, 0.3)``; None when not given."""
    if text is None:
        return None
    try:
        return tuple(float(v) / 100 for v in text.split(",") if v.strip())
    except ValueError:
        raise PipelineError(f"--road-percentages {text!r} must be numbers separated by commas, e.g. 10,50,90") from None


@app.command()
@_fail_cleanly
def evaluate(
    store: Annotated[Path, typer.Argument(help="HDF5 mask (or baseline) store.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder.")],
    data: Annotated[Optional[Path], typer.Option("--data", help="Image root (default: the store's recorded source).")] = None,
    boxes: BoxesOpt = None,
    step: StepOpt = None,
    batch_size: BatchOpt = "auto",
    workers: WorkersOpt = None,
    device: DeviceOpt = None,
    alpha_split: AlphaSplitOpt = None,
    alpha_split_seed: AlphaSplitSeedOpt = 0,
    shard_: ShardOpt = None,
    metrics: MetricsOpt = None,
    road_percentages: Annotated[Optional[str], typer.Option(
        "--road-percentages", help="ROAD's percentages of pixels removed (MoRF) or kept (LeRF), comma-separated "
        "(default: 10,20,...,90, the paper's).")] = None,
    road_noise: Annotated[Optional[float], typer.Option(
        "--road-noise", help="ROAD's imputation noise sigma on [0, 1] pixels (default 0.01; 0 = off).")] = None,
    road_seed: Annotated[Optional[int], typer.Option("--road-seed", help="Seed of ROAD's noise (default 0).")] = None,
    road_precision: Annotated[Optional[str], typer.Option(
        "--road-precision", help="ROAD's imputation solve: float64 (default, within 1e-7 of the reference) or "
        "float32 (about 2.5x faster on a CPU; with --road-tol 1e-6, errors about 2e-3 on [0, 1] pixels).")] = None,
    road_tol: Annotated[Optional[float], typer.Option("--road-tol", help="ROAD's imputation tolerance "
                                                      "(relative residual; default 1e-9).")] = None,
) -> None:
    """Deletion/insertion, localisation and pointing games (default), ROAD and complexity (--metrics)
    of a store into a report folder.

    Under torchrun or a Slurm array each process evaluates its shard; see `perturb merge`.
    """
    from .distributed import resolve_shard
    from .evaluation import EvalConfig, parse_metrics
    from .jobs.evaluate import evaluate_run

    shard = resolve_shard(shard_)
    chosen = _given(metrics=None if metrics is None else parse_metrics(metrics),  # before any image or model
                    road_fractions=_percentages(road_percentages), road_noise=road_noise, road_seed=road_seed,
                    road_precision=road_precision, road_tol=road_tol)
    on = shard.device(_device(device))
    config = EvalConfig.with_alpha_split(_alpha_split(alpha_split), alpha_split_seed,
                                         batch_size=_fixed_batch(batch_size, on),
                                         **_given(step=step, workers=workers), **chosen)
    evaluated = evaluate_run(store, out, data=data, boxes=boxes, config=config, shard=shard, device=on)
    for warning in evaluated.warnings:
        typer.secho(warning, fg=typer.colors.YELLOW, err=True)
    for line in evaluated.lines:
        typer.echo(line)


@app.command()
@_fail_cleanly
def randomisation(
    store: Annotated[Path, typer.Argument(help="HDF5 store of `perturb masks` or `perturb baseline`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for randomisation.csv/.json/.png; the store's "
                                      "evaluation folder puts the curves in its report and in `compare`.")],
    data: Annotated[Optional[Path], typer.Option("--data", help="Image root (default: the store's recorded source).")] = None,
    limit: Annotated[int, typer.Option("--limit", help="The first N ok rows of the store.")] = 16,
    seed: Annotated[int, typer.Option("--seed", help="Re-initialisation seed (Quantus MPRT's default 42).")] = 42,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Only the first N blocks of the model's list "
                                                 "(default: all; docs/metrics.md lists them).")] = None,
    batch_size: BatchOpt = "auto",
    workers: WorkersOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Model-randomisation sanity check (Adebayo et al. 2018): re-make the store's maps as the model's
    blocks are re-initialised from the logits down, and measure how similar they stay.

    Costs (1 + blocks) times the store's own saliency time on LIMIT images (a solver store re-solves).
    """
    from .jobs.randomisation import RandomisationConfig, randomise_store
    from .store import MaskStore

    config = RandomisationConfig(**_given(limit=limit, seed=seed, steps=steps, workers=workers))  # checked first
    on = _device(device)
    config = dataclasses.replace(config, batch_size=_fixed_batch(batch_size, on))
    with MaskStore(store) as opened:
        spec = opened.model
    classifier = _load_model(spec, on)
    result = randomise_store(store, out, classifier, data_root=data, config=config,
                             notify=lambda line: typer.echo(line, err=True))
    for line in result.lines():
        typer.echo(line)
    typer.echo(f"wrote {out}")


NameOpt = Annotated[Optional[list[str]], typer.Option(
    "--name", help="A run's name in the tables (repeatable, one per run folder, in order; default: the folder names).")]


@app.command()
@_fail_cleanly
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Report folders of `perturb evaluate`; the first is the reference.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for comparison.md, comparison.csv, curves.png.")] = Path("comparison"),
    n_boot: Annotated[int, typer.Option("--n-boot", help="Bootstrap resamples per interval.")] = 2000,
    name: NameOpt = None,
) -> None:
    """Put evaluated runs side by side: means, 95% bootstrap intervals, paired differences."""
    from .report.compare import compare_runs

    table = compare_runs(runs, out, n_boot=n_boot, names=name or None)
    typer.echo((out / "comparison.md").read_text())
    _write_report(runs, out / "report.html", n_boot=n_boot, comparison=table, names=name or None)


@app.command()
@_fail_cleanly
def sweep(
    data: DataArg,
    preset_: Annotated[Optional[list[str]], typer.Option("--preset", "-p", help="A preset to run (repeatable); the first is the reference.")] = None,
    method: Annotated[Optional[list[str]], typer.Option("--method", help="A saliency method to run as `perturb baseline` "
                                                        "does (repeatable), after the presets (the reference when no preset).")] = None,
    opt: Annotated[Optional[list[str]], typer.Option("--opt", help="A method's option, METHOD:KEY=VALUE, e.g. "
                                                     "--opt captum:IntegratedGradients:n_steps=16 (repeatable).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Sweep folder: one sub-folder per preset and the comparison.")] = Path("results/sweep"),
    model: ModelOpt = "efficientnet_lite0",
    iterations: IterOpt = None,
    set_: SetOpt = None,
    boxes: BoxesOpt = None,
    step: StepOpt = None,
    batch_size: BatchOpt = "auto",
    workers: WorkersOpt = None,
    limit: LimitOpt = None,
    limit_for: Annotated[Optional[list[str]], typer.Option("--limit-for", help="NAME=N: only the first N images for "
                                                           "one preset or method too slow for all, e.g. --limit-for "
                                                           "extremal=8 (repeatable); compared over the images both have.")] = None,
    target: TargetOpt = TargetChoice.top1,
    targets: TargetsOpt = None,
    alpha_split: AlphaSplitOpt = None,
    alpha_split_seed: AlphaSplitSeedOpt = 0,
    device: DeviceOpt = None,
    metrics: MetricsOpt = None,
) -> None:
    """Solve, evaluate and compare several presets and saliency methods on the same images (resumable)."""
    from .evaluation import EvalConfig, parse_metrics
    from .jobs.baselines import checked_method
    from .jobs.preflight import preflight
    from .jobs.run import RunConfig
    from .jobs.sweep import MethodVariant, run_sweep, variant_runs

    variants = [(name, _solver_config(name, set_, iterations)) for name in preset_ or ()]  # fail before solving
    options = _sweep_method_options(opt, method or [])
    limits = _sweep_limits(limit_for)
    for name in method or ():
        checked_method(name, None, options.get(name, {}))  # an unknown method or option fails before loading
        variants.append((name, MethodVariant(name, options.get(name, {}))))
    variant_runs([name for name, _ in variants], RunConfig(), limits)  # a --limit-for typo fails here too
    preflight(data, limit=limit)  # a bad path is said before the model loads
    on = _device(device)
    run = RunConfig(batch_size=_batch_size(batch_size), targets=_targets(targets, data, limit),
                    **_given(workers=workers, limit=limit, target=target))
    evaluation = EvalConfig.with_alpha_split(
        _alpha_split(alpha_split), alpha_split_seed, batch_size=_fixed_batch(batch_size, on),
        **_given(step=step, workers=workers, metrics=None if metrics is None else parse_metrics(metrics)))
    classifier = _load_model(model, on)
    result = run_sweep(data, out, classifier, variants, run, boxes, evaluation, notify=typer.echo, limits=limits)
    for line in result.lines():
        typer.echo(line)


def _sweep_limits(assignments: list[str] | None) -> dict[str, int]:
    """``--limit-for NAME=N`` as ``{name: N}`` (NAME may hold ':', as captum:Occlusion)."""
    form = "NAME=N, e.g. --limit-for extremal=8"
    limits = dict(_key_value(text, form, flag="--limit-for") for text in assignments or ())
    for name, count in limits.items():
        if not count.isdigit():
            raise PipelineError(f"--limit-for {name}={count} must be {form}")
    return {name: int(count) for name, count in limits.items()}


def _sweep_method_options(assignments: list[str] | None, methods: list[str]) -> dict[str, dict[str, str]]:
    """``--opt METHOD:KEY=VALUE`` as ``{method: {key: "value"}}`` (METHOD may hold ':', as captum:Saliency)."""
    options: dict[str, dict[str, str]] = {}
    for text in assignments or ():
        target, value = _key_value(text, "METHOD:KEY=VALUE, e.g. --opt rise:num_masks=500", method=True)
        name, _, key = target.rpartition(":")
        if name not in methods:
            raise PipelineError(f"--opt {text!r} names {name!r}, which is not a --method of this sweep "
                                f"({', '.join(methods) or 'none'})")
        options.setdefault(name, {})[key] = value
    return options


def _write_report(runs: list[Path], out: Path, n_boot: int = 2000, gallery: int = 4, **options) -> Path:
    """Write the HTML report of ``runs`` to ``out`` and say where it is."""
    from .jobs.reports import report_line, write_run_report

    path = write_run_report(runs, out, n_boot=n_boot, gallery=gallery, **options)
    typer.echo(report_line(path))
    return path


@app.command()
@_fail_cleanly
def report(
    runs: Annotated[list[Path], typer.Argument(help="Report folders of `perturb evaluate`; several make a "
                                               "comparison (the first is the reference).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")] = Path("report.html"),
    n_boot: Annotated[int, typer.Option("--n-boot", help="Bootstrap resamples per interval.")] = 2000,
    data: Annotated[Optional[Path], typer.Option("--data", help="Image root for the gallery pictures "
                                                 "(default: each run's recorded image folder).")] = None,
    gallery: Annotated[int, typer.Option("--gallery", help="Images per gallery row (best, worst, random) "
                                         "and metric.")] = 4,
    name: NameOpt = None,
) -> None:
    """Write one self-contained HTML page (tables, curves, galleries) for evaluated runs."""
    _write_report(runs, out, n_boot=n_boot, gallery=gallery, data_root=data, names=name or None)


@app.command()
@_fail_cleanly
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the demo images, store and pictures.")] = Path("results/demo"),
    iterations: IterOpt = None,
    device: DeviceOpt = None,
    step: StepOpt = None,
) -> None:
    """Run the main job on images shipped with scikit-image, then inspect, export, evaluate and report."""
    from .jobs.demo import make_demo_boxes, make_demo_folder

    images = make_demo_folder(out / "images")
    store = out / "masks.h5"
    masks(images, out=store, iterations=iterations, batch_size="4", workers=0, device=device,
          model="efficientnet_lite0", preset=DEFAULT_PRESET, set_=None, limit=None, target=TargetChoice.top1,
          targets=None, seed=None, overwrite=False, compile_=False, max_pixels=None)
    inspect(store)
    export(store, out=out / "pictures", row=None, limit=16, data=None)
    evaluate(store, out=out / "evaluation", data=None, boxes=make_demo_boxes(out / "boxes"), step=step,
             batch_size="auto", workers=0, device=device)
    typer.echo(f"open the report: {out / 'evaluation' / 'report.html'}")


def _stop_on_sigterm(signum: int, frame: object) -> None:
    # A scheduler's SIGTERM (preemption, scancel, timeout) then ends a run the way Ctrl-C does: the
    # mask store folds its finished batches before the process exits. Once: a second SIGTERM must
    # not break that fold (the scheduler's SIGKILL is the hard stop). Loader workers ignore it
    # (pipeline.data.dataset), so none dies under the main process.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def main() -> None:
    from .allocator import retain_freed_memory

    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    retain_freed_memory()  # else a CPU solve page-faults its large temporaries in at every iteration
    app()
