"""Command line: ``mtlutils run | synth | tile | concepts | bags | sweep | summary | compare | report`` (also ``python -m mtlutils``).

Every user error ends in one line on stderr (``error: …`` naming the file or value and the fix) and a
non-zero exit status; nothing half-written is left behind (the library writes atomically).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_USAGE = 2
EXIT_FAILED = 1


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="execute the numbered notebooks with papermill")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", const="quick", dest="mode", help="CI smoke sizes")
    mode.add_argument("--full", action="store_const", const="full", dest="mode", help="the papers' sizes")
    p.set_defaults(mode="default")
    p.add_argument("--only", nargs="+", metavar="NN", help="notebook numbers or names, e.g. 01 03")
    p.add_argument("--out", default="runs/latest", help="run folder (default: runs/latest)")
    p.add_argument(
        "-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"), help="a notebook parameter"
    )
    p.add_argument(
        "--kernel", default="python3", help="Jupyter kernel name (default: python3, this interpreter)"
    )
    p.add_argument("--timeout", type=int, default=None, help="per-cell timeout in seconds")
    p.add_argument(
        "--notebooks", default=None, help="folder of NN_name.ipynb notebooks (default: the project's)"
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="rerun every notebook (default: skip those already run ok here with the same inputs and code)",
    )


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write the synthetic multi-center cohort")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--slides", type=int, default=None, help="slides per center (default: notebook 01's default)"
    )
    p.add_argument("--size", type=int, default=None, help="slide side in level-0 px (default: notebook 01's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-confounder", action="store_true", help="control cohort: same prevalence everywhere")
    p.add_argument("--workers", type=int, default=1)


def _add_tile(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tile", help="tile the slides a manifest lists into a patch dataset")
    p.add_argument("--manifest", required=True, help="CSV with slide_id, patient_id, center, split, path")
    p.add_argument("--out", required=True, help="output folder of the patch dataset")
    p.add_argument("--mpp", type=float, default=0.5, help="target µm per pixel of the tiles (default 0.5)")
    p.add_argument("--size", type=int, default=224, help="tile side in px (default 224)")
    p.add_argument("--mpp-override", type=float, default=None, help="µm/px to assume for slides lacking it")
    p.add_argument("--max-tiles", type=int, default=None, help="at most this many tiles per slide")
    p.add_argument("--tissue-threshold", type=float, default=0.5, help="minimum tissue fraction of a tile")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)


def _add_concepts(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("concepts", help="extract nuclei concepts for a patch dataset")
    p.add_argument("--patches", required=True, help="patch dataset folder (from `mtlutils tile`)")
    p.add_argument("--workers", type=int, default=1)


def _add_bags(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bags", help="render and encode the synthetic bag cohort (one feature file per slide)")
    p.add_argument("--out", required=True, help="output folder")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", const="quick", dest="mode", help="CI smoke sizes")
    mode.add_argument("--full", action="store_const", const="full", dest="mode", help="paper-like sizes")
    p.set_defaults(mode="default")
    p.add_argument("--encoder", default=None, help="stats (default), random_cnn or timm:<model name>")
    p.add_argument("--encoder-path", default=None, help="local weights file of a timm encoder")
    p.add_argument("--patients", type=int, default=None, help="internal patients (default: the mode's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="train the bag model with each balancer on the same folds (cached)")
    p.add_argument("--bags", required=True, help="bag cohort folder (from `mtlutils bags`)")
    p.add_argument(
        "--methods", nargs="+", default=None, help="weighting/gradient names (default: paper B's 16)"
    )
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--epochs", type=int, default=None, help="maximum epochs (default 32)")
    p.add_argument("--out", required=True, help="output folder (jobs/ cache and table.csv)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    p.add_argument("--paper-sizes", action="store_true", help="paper B's model sizes (384-d, 2+2 layers)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtlutils", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_run,
        _add_synth,
        _add_tile,
        _add_concepts,
        _add_bags,
        _add_sweep,
        _add_summary,
        _add_compare,
        _add_report,
        _add_camelyon,
    ):
        add(sub)
    return parser


def _add_camelyon(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("camelyon", help="write a cohort manifest for a Camelyon16 or Camelyon17 download")
    p.add_argument("root", help="the unzipped challenge folder (slides, lesion annotations, label CSVs)")
    p.add_argument("--out", required=True, help="manifest CSV to write (then: notebook 01 with MANIFEST)")
    p.add_argument("--challenge", default="auto", choices=("auto", "camelyon16", "camelyon17"))
    p.add_argument("--external", nargs="*", default=[], help="centers held out as the external split")
    p.add_argument("--seed", type=int, default=0, help="seed of the patient-grouped split")


def _add_summary(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("summary", help="a run's times and key figures as markdown (the README's block)")
    p.add_argument("run", help="run folder holding results.json")
    p.add_argument("--readme", default=None, help="rewrite the measured block of this README in place")
    p.add_argument("--machine", default="2-core CPU, 24 GB", help="hardware named in the block")
    p.add_argument("--figures", default=None, help="with --readme: copy the key figures here and show them")


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="the recorded figures of two runs side by side, with differences")
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.add_argument("--atol", type=float, default=0.0, help="hide numeric differences up to this size")


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="one static HTML page of a run (figures, numbers, notebooks)")
    p.add_argument("run", help="run folder holding results.json")


def _cmd_run(args: argparse.Namespace) -> int:
    from mtlutils.core.progress import progress_enabled
    from mtlutils.core.runner import NOTEBOOK_DIR, NotebookFailed, parse_value, print_summary, run_notebooks

    params = {name: parse_value(value) for name, value in args.p}
    try:
        results = run_notebooks(
            mode=args.mode,
            only=args.only,
            out_dir=args.out,
            parameters=params,
            kernel_name=args.kernel,
            timeout_s=args.timeout,
            notebook_dir=args.notebooks or NOTEBOOK_DIR,
            show_progress=progress_enabled(),
            fresh=args.fresh,
        )
    except NotebookFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILED
    print_summary(results)
    print(f"results: {Path(args.out) / 'results.json'}")
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from mtlutils.core.presets import preset
    from mtlutils.synthetic import generate_cohort

    sizes = preset("01", "default", slides=args.slides, slide_px=args.size)
    manifest = generate_cohort(
        args.out,
        slides_per_center=sizes["slides"],
        size_px=sizes["slide_px"],
        seed=args.seed,
        confounder=not args.no_confounder,
        workers=args.workers,
    )
    print(f"wrote {len(manifest)} slides to {args.out}")
    return 0


def _cmd_tile(args: argparse.Namespace) -> int:
    from mtlutils.data import tile_cohort

    index = tile_cohort(
        args.manifest,
        args.out,
        tile_mpp=args.mpp,
        tile_px=args.size,
        mpp_override=args.mpp_override,
        tissue_threshold=args.tissue_threshold,
        max_tiles_per_slide=args.max_tiles,
        seed=args.seed,
        workers=args.workers,
    )
    print(f"wrote {len(index)} patches from {index['slide_id'].nunique()} slides to {args.out}")
    return 0


def _cmd_concepts(args: argparse.Namespace) -> int:
    from mtlutils.concepts import extract_concepts_cli

    return extract_concepts_cli(args.patches, args.workers)


def _cmd_bags(args: argparse.Namespace) -> int:
    from mtlutils.bags import DEFAULT_ENCODER, bag_cohort_config, build_bag_cohort

    cfg = bag_cohort_config(args.mode, n_patients=args.patients, seed=args.seed)
    info = build_bag_cohort(args.out, cfg, args.encoder or DEFAULT_ENCODER, args.encoder_path, args.workers)
    print(
        f"wrote {info['n_slides']} feature files ({info['n_tiles']} tiles, {info['feature_dim']}-d "
        f"{info['encoder']}) to {args.out} in {info['seconds']} s"
    )
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from mtlutils.experiments import bag_protocol
    from mtlutils.experiments.sweep import run_sweep
    from mtlutils.mil import PAPER_B, MILConfig, MILTrainConfig

    train = MILTrainConfig() if args.epochs is None else MILTrainConfig(epochs=args.epochs)
    sweep = run_sweep(
        args.bags,
        args.methods,
        args.folds,
        args.seeds,
        args.out,
        args.workers,
        PAPER_B if args.paper_sizes else MILConfig(),
        train,
    )
    table = bag_protocol.method_table(sweep.results, sweep.y, sweep.y_ext)
    from mtlutils.core.io import atomic_write_text

    atomic_write_text(Path(args.out) / "table.csv", table.to_csv(index=False))
    cols = [c for c in ("method", "auroc", "auroc_sd", "auprc", "silhouette", "ext_auroc") if c in table]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"{sweep.computed} job(s) trained, {len(sweep.results) - sweep.computed} read from {args.out}/jobs")
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    from mtlutils.core import summary
    from mtlutils.core.io import atomic_write_text

    block = summary.readme_block(summary.load_results(args.run), args.machine)
    if args.readme:
        path = Path(args.readme)
        if not path.is_file():
            raise FileNotFoundError(f"--readme {path} does not exist")
        text = summary.replace_block(path.read_text(), block)
        if args.figures:
            images = summary.copy_key_figures(args.run, args.figures, path)
            text = summary.replace_block(text, images, summary.KEY_START, summary.KEY_END)
        atomic_write_text(path, text)
        print(
            f"updated the measured block of {path}"
            + (f" and its figures in {args.figures}" if args.figures else "")
        )
    else:
        print(block)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from mtlutils.core import summary

    table = summary.compare(summary.load_results(args.run_a), summary.load_results(args.run_b), args.atol)
    if table.empty:
        print("no recorded figure differs")
    else:
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from mtlutils.core.report import write_report

    path = write_report(args.run)
    print(f"wrote {path}")
    return 0


def _cmd_camelyon(args: argparse.Namespace) -> int:
    from mtlutils.data.camelyon import write_camelyon_manifest

    out = write_camelyon_manifest(
        args.root, args.out, challenge=args.challenge, external_centers=args.external, seed=args.seed
    )
    print(f"wrote the manifest {out}")
    return 0


COMMANDS = {
    "run": _cmd_run,
    "synth": _cmd_synth,
    "tile": _cmd_tile,
    "concepts": _cmd_concepts,
    "bags": _cmd_bags,
    "sweep": _cmd_sweep,
    "summary": _cmd_summary,
    "compare": _cmd_compare,
    "report": _cmd_report,
    "camelyon": _cmd_camelyon,
}


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the sub-command; user errors print one line and return non-zero."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, PermissionError, OSError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
