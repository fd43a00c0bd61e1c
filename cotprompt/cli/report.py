"""``cotprompt report``: a sweep's results aggregated over seeds into the papers' tables.

    cotprompt report runs/base2new [--to DIR] [--format md,csv,json] [--plots] [--json]

Reads every ``results.json`` under ``OUTPUT``, writes ``report.md``, ``report.csv`` and
``report.json`` (and PNG plots with ``--plots``) into ``DIR`` (default ``OUTPUT/report``) and
prints the Markdown tables; ``--json`` prints the report as JSON with the written files instead.
See :mod:`cotprompt.experiments.report`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cotprompt.cli._common import EXIT_OK, add_json, print_json, write

__all__ = ["add_commands"]


def add_commands(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add ``report`` to the ``cotprompt`` parser.

    Args:
        subparsers: What ``ArgumentParser.add_subparsers()`` returned.
        common: The parent parser of the options every subcommand accepts.
    """
    parser = subparsers.add_parser(
        "report", parents=[common], help="tables and plots of a sweep's results",
        description=(
            "Aggregate the results.json files of a sweep over seeds (mean ± population std, as "
            "the research code) into the papers' tables: base-to-new (Base, New, H per dataset "
            "and their average), cross-dataset transfer, domain generalisation and few-shot. "
            "Runs of one cell must have the same settings (fingerprint) and a table one "
            "backbone; other results are refused. "
            "Published reference numbers are shown beside the measured ones, with their source. "
            "Writes report.md, report.csv and report.json (and PNG plots with --plots) and "
            "prints the Markdown tables."
        ),
    )
    parser.add_argument("output", metavar="OUTPUT", help="the sweep's output folder")
    parser.add_argument("--to", metavar="DIR",
                        help="the report folder (default: OUTPUT/report)")
    parser.add_argument("--format", default="md,csv,json", metavar="FORMATS",
                        help="comma-separated file formats among md, csv, json (default: all)")
    parser.add_argument("--plots", action="store_true",
                        help="also write PNG plots (needs matplotlib)")
    parser.add_argument("--metric", default="accuracy",
                        choices=("accuracy", "mean_per_class_accuracy"),
                        help="the metric aggregated (default: accuracy, as the papers)")
    parser.add_argument("--no-published", dest="published", action="store_false",
                        help="leave out the published reference numbers")
    add_json(parser, "print the report and the written files as JSON")
    parser.set_defaults(handler=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from cotprompt.experiments.report import parse_formats, report_from_folder, write_report

    formats = parse_formats(args.format)
    report = report_from_folder(args.output, metric=args.metric, published=args.published)
    folder = Path(args.to) if args.to else Path(args.output) / "report"
    files = write_report(report, folder, formats=formats, plots=args.plots)
    if args.json:
        print_json({"folder": str(folder), "files": [str(p) for p in files],
                    "report": report.to_json()})
    else:
        write(report.to_markdown().rstrip("\n"))
    return EXIT_OK
