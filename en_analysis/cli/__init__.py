"""``en-analysis <step>``: parse arguments, call the library, say where the outputs went.

Errors a user can cause end in one line and exit status 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import UserError
from ..core.layout import RunLayout
from ..settings.choices import check_device
from ..settings.config import Config, load_config, parse_override, preset_names, read_config
from ..training.distributed import leave_process_group

if TYPE_CHECKING:  # the CLI imports the library when a step runs: --help stays fast
    from ..run.folder import Run


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
    _set_arg(p, "override one setting, e.g. --set train.epochs=3 (repeatable)")


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="the run folder (e.g. runs/fashion-mnist)")
    _analysis_arg(p)
    _set_arg(
        p,
        "an analysis setting for this analysis, e.g. --set analysis.scaling=raw (stored with "
        "it; repeatable); data.root and data.num_workers apply to this step only",
    )
    p.add_argument("--epochs", help="comma-separated epochs (default: every checkpoint)")
    p.add_argument(
        "--force",
        action="store_true",
        help="recompute outputs that are up to date, and let --set replace the settings of an "
        "analysis that already has outputs",
    )


def _analysis_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--analysis",
        default="default",
        metavar="NAME",
        help="the analysis to write (default: default); another NAME keeps its own settings "
        "and outputs beside the others, in RUN/analyses/NAME",
    )


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
    from ..training.train import train

    config, out = _asked_config(args, continues=args.resume)
    run = train(config, out, resume=args.resume, progress=not args.quiet)
    if _main_process():
        print(f"run: {run}")


STEP_SETTINGS = {("data", "root"), ("data", "num_workers")}  # a step may change these for itself


@contextmanager
def _run(args: argparse.Namespace) -> Iterator[Run]:
    """The run folder of a step, opened at its analysis; ``--set analysis.*`` settings become
    that analysis's (refused when its outputs were made with others, unless --force), and are
    stored once the step has succeeded."""
    from ..run.folder import Run

    run = Run(args.run, args.analysis)
    for text in args.overrides:
        ((section, values),) = parse_override(text).items()
        if section != "analysis" and (section, *values) not in STEP_SETTINGS:
            raise UserError(
                f"--set {text}: a step changes analysis settings (analysis.*) and data.root or "
                "data.num_workers; model, data and training settings are the run's "
                "(`en-analysis train --resume --set ...` changes its schedule)"
            )
    asked = load_config(overrides=args.overrides, base=run.config)
    run.config.data = asked.data
    run.configure(asked.analysis, replace=args.force)
    yield run
    if _main_process():
        run.save_settings()


def _report(paths: list[Path], written: bool) -> None:
    for path in paths:
        print(f"{'wrote' if written else 'up to date:'} {path}")


def cmd_extract(args: argparse.Namespace) -> None:
    from ..analysis.extract import extract
    from ..training.checkpoints import run_identity

    with _run(args) as run:
        run_identity(run.path)  # a damaged run.json: one error, not one per checkpoint
        if args.batch_size is not None and args.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
        check_device("--device", args.device)
        done = extract(
            run,
            _epochs(args),
            device=args.device,
            batch_size=args.batch_size,
            force=args.force,
            progress=not args.quiet,
        )
        if not _main_process():
            return
        print(
            f"ratios: {run.files.ratios} (written: {done.written or 'none'}; "
            f"up to date: {done.skipped or 'none'})"
        )
        if done.failed:
            for path, message in done.failed.items():
                print(f"failed: {path}: {message}", file=sys.stderr)
            raise UserError(f"{len(done.failed)} checkpoint(s) could not be extracted (see above)")


def cmd_export(args: argparse.Namespace) -> None:
    from ..analysis.export import export

    with _run(args) as run:
        _report(*export(run, _epochs(args), args.samples, args.wide, force=args.force))
        if args.projector:
            from ..analysis.projector import write_projector

            folder = write_projector(run, _epochs(args))
            print(f"wrote {folder} (open it with: tensorboard --logdir {folder})")


def cmd_explore(args: argparse.Namespace) -> None:
    import time

    from ..figures.explorer import check_page_path, explorer, write_explorer

    start = time.perf_counter()
    with _run(args) as run:
        if args.out:
            page = check_page_path(args.out)
            path, written = explorer(run, _epochs(args)).write_html(page), True
        else:
            path, written = write_explorer(run, _epochs(args), force=args.force)
        if not written:
            print(f"up to date: {path} (--force to write it again)")
            return
        print(
            f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB in "
            f"{time.perf_counter() - start:.1f} s; open it in a browser, no server needed)"
        )


def cmd_embed(args: argparse.Namespace) -> None:
    from ..analysis.embedding import embed

    with _run(args) as run:
        written, skipped = embed(run, _epochs(args), force=args.force, progress=not args.quiet)
        print(
            f"embeddings: {run.files.embeddings} (written: {written or 'none'}; "
            f"up to date: {skipped or 'none'})"
        )


def cmd_metrics(args: argparse.Namespace) -> None:
    from ..analysis.metrics import summary, write_clustering
    from ..figures import plotting

    with _run(args) as run:
        table, written = write_clustering(run, _epochs(args), force=args.force)
        print(summary(table).to_string(index=False))
        _report([run.files.table("clustering.csv")], written)
        _report(*plotting.write_clustering_figure(run, force=args.force))


def cmd_wordnet(args: argparse.Namespace) -> None:
    from ..analysis.wordnet import extreme_pairs, write_comparison
    from ..figures import plotting

    with _run(args) as run:
        result, written = write_comparison(run, _epochs(args), force=args.force)
        t = result.table
        print(
            t[["epoch", "space", "spearman", "ci_low", "ci_high", "p_value"]].to_string(index=False)
        )
        for title, matrix in (
            ("WordNet", result.wordnet),
            (f"ratio clusters, epoch {result.epoch}", result.clusters),
        ):
            close, far = extreme_pairs(matrix, result.categories, 3)
            print(
                f"{title}: closest "
                + ", ".join(f"{a}/{b}" for a, b, _ in close)
                + "; farthest "
                + ", ".join(f"{a}/{b}" for a, b, _ in far)
            )
        _report([run.files.table("wordnet.csv")], written)
        _report(*plotting.write_wordnet_figure(run, result, force=args.force))


def cmd_verdict(args: argparse.Namespace) -> None:
    from ..analysis.verdict import markdown, write_verdict

    with _run(args) as run:
        table, written = write_verdict(run, force=args.force)
        print(markdown(table))
        _report([run.files.table("verdict.csv"), run.files.table("verdict.md")], written)


def cmd_plot(args: argparse.Namespace) -> None:
    from ..figures import plotting

    with _run(args) as run:
        categories = args.categories.split(",") if args.categories else None
        _report(
            *plotting.write_ratio_figures(
                run, _epochs(args), not args.no_animation, categories, force=args.force
            )
        )


def cmd_reproduce(args: argparse.Namespace) -> None:
    from ..pipeline.reproduce import reproduce

    config, out = _asked_config(args, continues=True)
    summary = reproduce(config, out, args.analysis, force=args.force, progress=not args.quiet)
    print(summary.text())


def _print_replicates(result, verdict, out: Path) -> None:
    from ..analysis.verdict import markdown

    print(f"{len(result.runs)} runs: " + ", ".join(str(r.path) for r in result.runs))
    print(markdown(verdict))
    for name in ("analysis/replicates.csv", "analysis/replicate_verdict.csv"):
        print(f"wrote {out / name}")
    print(f"wrote {out / 'figures' / 'replicates.png'}")


def cmd_replicate(args: argparse.Namespace) -> None:
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
    from ..pipeline.replicates import write_replicates

    result, verdict = write_replicates(args.out, args.runs)
    _print_replicates(result, verdict, args.out)


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

    p = sub.add_parser("extract", help="collect the L x K ratios of every checkpoint")
    _run_args(p)
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--batch-size", type=int, help="images per forward pass")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("export", help="per-category ratio statistics as CSV")
    _run_args(p)
    p.add_argument(
        "--samples", action="store_true", help="also one row per sample/layer/normalizer"
    )
    p.add_argument("--wide", action="store_true", help="also one column per layer/normalizer")
    p.add_argument(
        "--projector",
        action="store_true",
        help="also TensorBoard projector files in RUN/projector (ratios, metadata, sprite)",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "explore", help="an offline HTML page to explore the t-SNE maps of every epoch"
    )
    _run_args(p)
    p.add_argument("--out", type=Path, help="the page (default: RUN/figures/explorer.html)")
    p.set_defaults(func=cmd_explore)

    p = sub.add_parser("embed", help="openTSNE of the ratio vectors, per epoch")
    _run_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("plot", help="the t-SNE grid, its animation, ratio heatmaps and curves")
    _run_args(p)
    p.add_argument("--categories", help="comma-separated categories for the ratio curves")
    p.add_argument("--no-animation", action="store_true", help="skip the GIF")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("metrics", help="clustering per epoch (silhouette, k-NN, trustworthiness)")
    _run_args(p)
    p.set_defaults(func=cmd_metrics)

    p = sub.add_parser("wordnet", help="WordNet distances vs cluster distances (Mantel test)")
    _run_args(p)
    p.set_defaults(func=cmd_wordnet)

    p = sub.add_parser("verdict", help="holds / does not hold / inconclusive, per claim")
    _run_args(p)
    p.set_defaults(func=cmd_verdict)

    p = sub.add_parser("reproduce", help="every step, skipping what is up to date")
    _config_args(p)
    p.add_argument("--out", type=Path, help="run folder (default: runs/<preset name>)")
    _analysis_arg(p)
    p.add_argument(
        "--force",
        action="store_true",
        help="recompute every analysis step; replaces an analysis made with other settings",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("replicate", help="one run per seed, then their spread (compare)")
    _config_args(p)
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: 0,1,2)")
    p.add_argument("--out", type=Path, help="folder of the runs (default: runs/<name>-replicates)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_replicate)

    p = sub.add_parser("compare", help="the spread of every number across finished runs")
    p.add_argument("runs", nargs="+", type=Path, help="run folders of one setting")
    p.add_argument("--out", type=Path, required=True, help="where replicates.csv and the figure go")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("presets", help="list the presets, or print one resolved")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=cmd_presets)
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


def main(argv: list[str] | None = None) -> int:
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
        leave_process_group()  # under torchrun: before the interpreter exits
    return 0


if __name__ == "__main__":
    sys.exit(main())
