"""The `testbed` command: run experiments, report on their results, check the machine."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from testbed.emulator.mininet_topology import TopologyError
from testbed.mininet_backend import RunFailed
from testbed.runner import BACKENDS, OutputDirError, run_experiment
from testbed.spec import Run, load_spec
from testbed.spec_table import SpecError

EXIT_USAGE = 2
_NETWORK_COLUMNS = [
    ("bitrate_kbps", "sent"), ("achieved_kbps", "recv"), ("loss_pct", "loss%"), ("queue_drop_pct", "fifo%"),
    ("delay_p50_ms", "p50"), ("delay_p95_ms", "p95"), ("delay_max_ms", "max"),
]
_NETWORK_CAPTION = ("sent/recv in kbps; loss% of sent packets, fifo% the part dropped by the queue; "
                    "one-way delay p50/p95/max in ms")
_VIDEO_COLUMNS = [
    ("bitrate_kbps", "kbps"), ("psnr_median_db", "PSNR"), ("psnr_p10_db", "p10"),
    ("psnr_worst10_mean_db", "w10"), ("non_rendered_pct", "nonr%"), ("freeze_count", "frz"),
    ("latency_p95_ms", "lat"),
]
_VIDEO_CAPTION = ("kbps sent (media + FEC + rtx); PSNR median, 10th pct and worst-10 % mean in dB; nonr% frames not "
                  "rendered; frz W3C freezes per run; lat capture-to-display p95 in ms")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="testbed", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run every scheme x network x video x seed of a spec")
    run.add_argument("spec", type=Path, help="experiment spec (TOML)")
    run.add_argument("--backend", default="sim", choices=BACKENDS, help="network backend (default: sim)")
    run.add_argument("--out", type=Path, help="results directory (default: results/<experiment name>)")
    run.add_argument("--jobs", type=int, default=1, help="parallel processes (results are identical)")
    run.add_argument("--seed", type=int, help="run only this seed instead of the spec's seeds")
    run.add_argument("--overwrite", action="store_true", help="replace an existing results directory")
    report = commands.add_parser("report", help="write report.html, report.md, figures and tables of results")
    report.add_argument("results", type=Path, help="a results directory written by `testbed run`")
    commands.add_parser("doctor", help="report what this machine can run")
    net = commands.add_parser("net", help="Mininet host housekeeping")
    net_commands = net.add_subparsers(dest="net_command", required=True)
    cleanup = net_commands.add_parser("cleanup", help="remove the Mininet hosts, processes and veths left by "
                                                      "killed runs")
    cleanup.add_argument("--prefix", default="tb", help="name prefix of what to remove (default: every testbed "
                                                         "run; pass one run's prefix to target it)")
    return parser


def _summary_table(title: str, caption: str, rows: pd.DataFrame, columns: list[tuple[str, str]]) -> Table:
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD)
    table.add_column("scheme", no_wrap=True)
    table.add_column("network", no_wrap=True)
    for _, heading in columns:
        table.add_column(heading, justify="right", min_width=4)
    for _, row in rows.iterrows():
        table.add_row(row["scheme"], row["network"], *(f"{row[c]:.1f}" for c, _ in columns))
    return table


def _print_summary(console: Console, summary: pd.DataFrame, out_dir: Path) -> None:
    """One screen: video schemes by quality, probes by network numbers."""
    rows = summary[summary["level"] == "aggregate"]
    title = f"summary ({out_dir / 'summary.csv'})"
    video = rows[rows["psnr_median_db"].notna()] if "psnr_median_db" in rows else rows.iloc[:0]
    probes = rows.drop(video.index)
    if len(video):
        console.print(_summary_table(title, _VIDEO_CAPTION, video, _VIDEO_COLUMNS))
    if len(probes):
        console.print(_summary_table(title, _NETWORK_CAPTION, probes, _NETWORK_COLUMNS))


def _run(args: argparse.Namespace, console: Console) -> int:
    if args.jobs < 1:
        console.print(Text.assemble(("error: ", "red"), "--jobs must be >= 1"))
        return EXIT_USAGE
    spec = load_spec(args.spec, seed_override=args.seed)
    out_dir = args.out or Path("results") / spec.experiment.name
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task(f"{spec.experiment.name} on {args.backend}", total=None)

        def on_done(run: Run) -> None:
            progress.advance(task)
            progress.update(task, description=f"{run.scheme.name} / {run.network.name} / seed {run.seed}")

        summary = run_experiment(spec, out_dir, backend=args.backend, jobs=args.jobs, overwrite=args.overwrite,
                                 on_start=lambda total: progress.update(task, total=total), on_done=on_done)
    _print_summary(console, summary, out_dir)
    failed = summary[summary["status"] == "failed"]
    for _, row in failed.iterrows():
        console.print(Text.assemble((f"run failed: {row['scheme']} / {row['network']} / seed {row['seed']}: ", "red"),
                                    str(row["error"])))
    console.print(f"results written to {out_dir}" + (f" ({len(failed)} failed runs, see summary.csv)"
                                                      if len(failed) else ""))
    return 1 if len(failed) else 0


def _report(args: argparse.Namespace, console: Console) -> int:
    required = ("spec.toml", "environment.json", "frames.parquet", "packets.parquet", "bitstreams.parquet",
                "summary.csv")
    missing = [name for name in required if not (args.results / name).is_file()]
    if missing:
        raise OutputDirError(f"{args.results}: not a results directory (missing {', '.join(missing)})")
    from testbed.analysis.report import build_report  # matplotlib loads only for reports
    from testbed.visual_strip import render_visual_strip

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("report", total=None)

        def on_step(done: int, total: int, label: str) -> None:
            progress.update(task, completed=done, total=total, description=label)

        strip = render_visual_strip(args.results, args.results)
        written = build_report(args.results, on_step, {"visual_strip": strip} if strip else None)
    console.print(f"report written to {written['report.html']} ({len(written)} files)")
    return 0


def _net_cleanup(args: argparse.Namespace, console: Console) -> int:
    from testbed.emulator.mininet_topology import TopologyError, cleanup_prefix

    try:
        removed = cleanup_prefix(args.prefix)
    except TopologyError as error:
        console.print(Text.assemble(("error: ", "red"), str(error)))
        return EXIT_USAGE
    console.print(f"removed {len(removed)}: {', '.join(removed)}" if removed else "nothing to remove")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `testbed` console script."""
    args = _parser().parse_args(argv)
    console = Console(stderr=False)
    errors = Console(stderr=True)
    try:
        if args.command == "doctor":
            from testbed.doctor import main as doctor_main

            return doctor_main()
        if args.command == "report":
            return _report(args, console)
        if args.command == "net":
            return _net_cleanup(args, errors)
        return _run(args, console)
    except (SpecError, OutputDirError) as error:
        errors.print(Text.assemble(("error: ", "red"), str(error)), soft_wrap=True)
        return EXIT_USAGE
    except (TopologyError, RunFailed) as error:  # the mininet backend cannot run here (root, Mininet, netem)
        errors.print(Text.assemble(("error: ", "red"), str(error)), soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        errors.print("interrupted; nothing was written")
        return 130


if __name__ == "__main__":
    sys.exit(main())
