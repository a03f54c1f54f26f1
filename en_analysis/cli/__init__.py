"""The command line, ``en-analysis COMMAND``: the commands ``train``, ``reproduce``,
``replicate``, ``compare`` and ``presets``, and one subcommand per registered analysis step, its
options, help and reporting derived from its declaration (``steps.registry``). It parses
arguments, calls the library and says where the outputs went; errors a user can cause end in
one line and exit status 2 (``--debug`` shows the traceback). It builds its parser from
``core``, ``settings`` and ``steps`` alone, so ``--help`` imports no torch, pandas or
scikit-learn; a command imports what it needs when it runs. It may import ``core``,
``settings``, ``steps``, ``training``, ``analysis`` and ``pipeline``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..core.errors import UserError
from ..core.layout import RunLayout
from ..settings.config import Config, load_config, preset_names, read_config
from ..steps import registry
from ..steps.registry import Option, Step


def _set_arg(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help=help,
    )


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help=f"a named preset: {', '.join(preset_names())}")
    p.add_argument(
        "--config", metavar="FILE.toml", help="a TOML file of settings (over the preset)"
    )
    _set_arg(
        p,
        "override one setting, e.g. --set train.epochs=3 (repeatable; `en-analysis presets "
        "--show` lists every setting)",
    )


def _analysis_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--analysis",
        default="default",
        metavar="NAME",
        help="the analysis to write (default: default); another NAME keeps its own settings "
        "and outputs beside the others, in RUN/analyses/NAME",
    )


def _replace_args(p: argparse.ArgumentParser, force: str) -> None:
    p.add_argument(
        "--replace",
        action="store_true",
        help="let --set replace the settings of an analysis that already has outputs: the "
        "steps those settings shape are redone, nothing else",
    )
    p.add_argument("--force", action="store_true", help=force)


def _option(p: argparse.ArgumentParser, option: Option) -> None:
    kinds = {
        "int": dict(type=int),
        "path": dict(type=Path),
        "list": dict(type=lambda text: text.split(",")),
        "flag": dict(action="store_true"),
        "off": dict(action="store_false"),
    }
    p.add_argument(
        *option.flags,
        dest=option.dest,
        help=option.help,
        **({"default": option.default} if option.default is not None else {}),
        **({"metavar": option.metavar} if option.metavar else {}),
        **kinds.get(option.kind, {}),
    )


def _global_args(p: argparse.ArgumentParser, quiet: bool, main: bool = False) -> None:
    """The global options, which a command also accepts after its name (``en-analysis extract
    RUN --debug`` as ``en-analysis --debug extract RUN``): ``--debug``, and ``--quiet`` where
    the command has progress bars. On a command's parser they default to nothing
    (``SUPPRESS``), so that one given before the command is not reset by the command's parser."""
    default = {} if main else {"default": argparse.SUPPRESS}
    p.add_argument("--debug", action="store_true", help="show tracebacks", **default)
    if quiet:
        p.add_argument("--quiet", action="store_true", help="no progress bars", **default)


def _step_args(p: argparse.ArgumentParser, step: Step) -> None:
    """A step's arguments: the run, its analysis, --set of the settings it reads, --epochs,
    --replace, --force and its own options."""
    p.add_argument("run", type=Path, help="the run folder (e.g. runs/fashion-mnist)")
    _analysis_arg(p)
    reads = ", ".join(step.reads) or "none"
    _set_arg(
        p,
        "an analysis setting for this analysis, e.g. --set analysis.scaling=raw (stored with "
        "it; repeatable); data.root and data.num_workers apply to this step only. This step "
        f"reads: {reads}",
    )
    if step.epochs:
        p.add_argument("--epochs", help=f"comma-separated: {step.epochs}")
    _replace_args(
        p,
        "recompute outputs that are up to date, and let --set replace the settings of an "
        "analysis that already has outputs",
    )
    for option in step.options:
        _option(p, option)


def _main_process() -> bool:
    """False in the non-zero ranks of a torchrun launch: only rank 0 reports."""
    return os.environ.get("RANK", "0") == "0"


def _out(args: argparse.Namespace, config) -> Path:
    return args.out if args.out is not None else Path("runs") / config.name


def _epochs(args: argparse.Namespace) -> list[int] | None:
    if not getattr(args, "epochs", None):
        return None
    try:
        epochs = [int(e) for e in args.epochs.split(",") if e.strip()]
    except ValueError:
        raise UserError(f"--epochs must be comma-separated numbers, got {args.epochs!r}") from None
    return sorted(set(epochs))  # each epoch once, in order: tables and shifts follow the order


def _asked_config(args: argparse.Namespace, continues: bool) -> tuple[Config, Path]:
    """The settings asked for and the run folder. When the step ``continues`` an existing run
    (``train --resume``, ``reproduce``), what is not given (--preset, --config, --set) is the
    run's own: a resume or a rerun never silently resets a setting to a preset's value."""
    config = load_config(
        args.preset or (None if args.config else "fashion-mnist"), args.config, args.overrides
    )
    out = _out(args, config)
    stored = RunLayout(out).config
    if continues and stored.is_file() and not args.preset:
        config = load_config(None, args.config, args.overrides, base=read_config(stored))
    return config, out


def cmd_train(args: argparse.Namespace) -> None:
    """``en-analysis train``: train (or ``--resume``) a run, a checkpoint per epoch."""
    from ..training.train import train

    config, out = _asked_config(args, continues=args.resume)
    run = train(config, out, resume=args.resume, progress=not args.quiet)
    if _main_process():
        print(f"run: {run}")


def cmd_step(args: argparse.Namespace) -> None:
    """Any registered step: the run opened at its analysis with the step's settings, the step
    run, what it did reported; the settings are stored once it has succeeded."""
    from ..pipeline.runner import open_for_step, refuse_failures, report, run_step

    step = registry.step(args.command)
    run = open_for_step(args.run, args.analysis, args.overrides, args.replace or args.force)
    options = {o.dest: getattr(args, o.dest) for o in step.options}
    # under torchrun only rank 0 draws bars (``extract`` also checks for itself)
    progress = not args.quiet and _main_process()
    result = run_step(
        step, run, epochs=_epochs(args), force=args.force, progress=progress, **options
    )
    if not _main_process():
        return
    print("\n".join(report(result)))
    for path, message in result.failed.items():
        print(f"failed: {path}: {message}", file=sys.stderr)
    refuse_failures(step, result)
    run.save_settings()  # the step succeeded with them


def cmd_reproduce(args: argparse.Namespace) -> None:
    """``en-analysis reproduce``: train, then every registered step, skipping what is up to
    date; prints the summary and the verdict."""
    from ..pipeline.reproduce import reproduce

    config, out = _asked_config(args, continues=True)
    summary = reproduce(
        config,
        out,
        args.analysis,
        force=args.force,
        progress=not args.quiet,
        replace=args.replace,
    )
    print(summary.text())


def _print_replicates(result, verdict, out: Path) -> None:
    from ..analysis.verdict import markdown

    print(f"{len(result.runs)} runs: " + ", ".join(str(r.path) for r in result.runs))
    print(markdown(verdict))
    for name in ("analysis/replicates.csv", "analysis/replicate_verdict.csv"):
        print(f"wrote {out / name}")
    print(f"wrote {out / 'figures' / 'replicates.png'}")


def cmd_replicate(args: argparse.Namespace) -> None:
    """``en-analysis replicate``: one reproduced run per seed, then their spread and verdict."""
    from ..pipeline.replicates import replicate

    config = load_config(
        args.preset or (None if args.config else "fashion-mnist"), args.config, args.overrides
    )
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds must be comma-separated numbers, got {args.seeds!r}") from None
    out = args.out if args.out is not None else Path("runs") / f"{config.name}-replicates"
    result, verdict = replicate(config, seeds, out, progress=not args.quiet)
    _print_replicates(result, verdict, out)


def cmd_compare(args: argparse.Namespace) -> None:
    """``en-analysis compare``: the spread of every number across finished runs."""
    from ..pipeline.replicates import write_replicates

    result, verdict = write_replicates(args.out, args.runs)
    _print_replicates(result, verdict, args.out)


def cmd_presets(args: argparse.Namespace) -> None:
    """``en-analysis presets``: the presets' names, one preset as TOML, or every setting."""
    import tomli_w

    from ..steps.reference import settings_text

    if args.show:
        print(settings_text(load_config(args.name) if args.name else Config()), end="")
    elif args.name:
        print(tomli_w.dumps(load_config(args.name).to_dict()), end="")
    else:
        print("\n".join(preset_names()))


def _version() -> str:
    """The package's version (``en_analysis.__version__``)."""
    import en_analysis

    return en_analysis.__version__


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; ``parser.commands`` maps each command to its parser."""
    parser = argparse.ArgumentParser(
        prog="en-analysis",
        description="Train EN-ResNet50, collect its importance ratios every epoch, and test the "
        "claims of Exemplar Normalization.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"en-analysis {_version()}",
        help="print the version and exit",
    )
    _global_args(parser, quiet=True, main=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = {}

    def command(name: str, help: str, func, quiet: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        _global_args(p, quiet)
        commands[name] = p
        return p

    p = command("train", "train a model with per-epoch checkpoints", cmd_train)
    _config_args(p)
    p.add_argument("--out", type=Path, help="run folder (default: runs/<preset name>)")
    p.add_argument("--resume", action="store_true", help="continue after the last checkpoint")

    for step in registry.STEPS:
        _step_args(command(step.name, step.help, cmd_step), step)

    p = command(
        "reproduce",
        "train, then every step (" + " -> ".join(registry.NAMES) + "), skipping what is up to date",
        cmd_reproduce,
    )
    _config_args(p)
    p.add_argument("--out", type=Path, help="run folder (default: runs/<preset name>)")
    _analysis_arg(p)
    _replace_args(p, "recompute every analysis step; replaces an analysis made with other settings")

    p = command("replicate", "one run per seed, then their spread (compare)", cmd_replicate)
    _config_args(p)
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: 0,1,2)")
    p.add_argument("--out", type=Path, help="folder of the runs (default: runs/<name>-replicates)")

    p = command(
        "compare", "the spread of every number across finished runs", cmd_compare, quiet=False
    )
    p.add_argument("runs", nargs="+", type=Path, help="run folders of one setting")
    p.add_argument("--out", type=Path, required=True, help="where replicates.csv and the figure go")

    p = command("presets", "list the presets, or print one resolved", cmd_presets, quiet=False)
    p.add_argument("name", nargs="?", help="a preset: print its every setting as TOML")
    p.add_argument(
        "--show",
        action="store_true",
        help="every setting with its value (the preset's, else the default), type, allowed "
        "values, what a change to it redoes, and its help",
    )
    parser.commands = commands
    return parser


def _step_lock(args: argparse.Namespace):
    """The run lock for a step that writes into an existing run folder (``train`` and
    ``reproduce`` take it themselves), held by the main process only (under torchrun the others
    write nothing)."""
    from contextlib import nullcontext

    from ..core.io import run_lock

    run = getattr(args, "run", None)
    if run is None or not Path(run).is_dir() or not _main_process():
        return nullcontext()  # a missing folder is the step's own error to report
    return run_lock(run)


def _leave_process_group() -> None:
    """Under torchrun, leave the process group before the interpreter exits (only where a
    command imported torch's distributed package: ``--help`` never does)."""
    if "torch.distributed" in sys.modules:
        from ..training.distributed import leave_process_group

        leave_process_group()


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: the command line) and run its command; the exit status: 0,
    2 after a mistake the user can fix (one line, no traceback unless ``--debug``), 130 when
    interrupted."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with _step_lock(args):
            args.func(args)
    except UserError as e:
        if args.debug:
            raise
        print(f"en-analysis: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("en-analysis: interrupted", file=sys.stderr)
        return 130
    finally:
        _leave_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
