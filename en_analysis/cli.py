"""``en-analysis <step>``: parse arguments, call the library, say where the outputs went.

Errors a user can cause end in one line and exit status 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import load_config, preset_names
from .errors import UserError


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help=f"a named preset: {', '.join(preset_names())}")
    p.add_argument("--config", metavar="FILE.toml", help="a TOML file of settings (over the preset)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one setting, e.g. --set train.epochs=3 (repeatable)")


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="the run folder (e.g. runs/fashion-mnist)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override an analysis setting for this step, e.g. --set analysis.scaling=raw")
    p.add_argument("--epochs", help="comma-separated epochs (default: every checkpoint)")
    p.add_argument("--force", action="store_true", help="recompute outputs that are up to date")


def _out(args: argparse.Namespace, config) -> Path:
    return args.out if args.out is not None else Path("runs") / config.name


def _epochs(args: argparse.Namespace) -> list[int] | None:
    if not getattr(args, "epochs", None):
        return None
    try:
        return [int(e) for e in args.epochs.split(",") if e.strip()]
    except ValueError:
        raise UserError(f"--epochs must be comma-separated numbers, got {args.epochs!r}") from None


def cmd_train(args: argparse.Namespace) -> None:
    from .train import train

    config = load_config(args.preset or (None if args.config else "fashion-mnist"), args.config,
                         args.overrides)
    run = train(config, _out(args, config), resume=args.resume, progress=not args.quiet)
    print(f"run: {run}")


def cmd_presets(args: argparse.Namespace) -> None:
    import tomli_w

    if args.name:
        print(tomli_w.dumps(load_config(args.name).to_dict()), end="")
        return
    for name in preset_names():
        print(name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="en-analysis",
        description="Train EN-ResNet50, collect its importance ratios every epoch, and test the "
        "claims of Exemplar Normalization.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="STEP")

    p = sub.add_parser("train", help="train a model with per-epoch checkpoints")
    _config_args(p)
    p.add_argument("--out", type=Path, help="run folder (default: runs/<preset name>)")
    p.add_argument("--resume", action="store_true", help="continue after the last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("presets", help="list the presets, or print one resolved")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=cmd_presets)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except UserError as e:
        if args.debug:
            raise
        print(f"en-analysis: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("en-analysis: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
