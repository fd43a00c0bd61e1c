"""``cotprompt push`` and ``cotprompt pull``: the Hugging Face Hub subcommands.

:func:`add_commands` adds both to the ``cotprompt`` parser: each ``_add_<name>`` function builds a
command's parser and sets its ``handler`` to the ``_cmd_<name>`` function. Errors are raised as
:class:`~cotprompt.errors.CotpromptError` for the command line's common error handling. Results
go to stdout (``--json`` for a JSON object).

    cotprompt push ./my-prompts alice/eurosat-coop [--revision dev] [--private | --public]
        [--create-pr]
    cotprompt pull alice/eurosat-coop [--revision v1] [--local-dir ./eurosat-coop]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from cotprompt.cli._common import EXIT_OK, add_json, print_json, write

__all__ = ["add_commands"]

#: The INFO records of :mod:`cotprompt.hub` that say what the commands print on stdout anyway.
_RESULT_RECORDS = ("pushed %s to %s", "pulled %s at commit %s")

_TOKEN_HELP = "Hub token (default: HF_TOKEN or the token saved by `hf auth login`)"


def add_commands(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add ``push`` and ``pull`` (in this order) to the ``cotprompt`` parser.

    Args:
        subparsers: What ``ArgumentParser.add_subparsers()`` returned.
        common: The parent parser of the options every subcommand accepts.
    """
    _add_push(subparsers, common)
    _add_pull(subparsers, common)


def _add_push(subparsers: Any, common: argparse.ArgumentParser) -> None:
    push = subparsers.add_parser(
        "push",
        parents=[common],
        help="upload a saved pipeline folder to the Hugging Face Hub",
        description=(
            "Upload config, weights, model card and training history (history.json, whose "
            "per-epoch table the card shows) of a folder written by save_pretrained (or "
            "`cotprompt train`) to a Hub repository, in one commit. The repository, and the "
            "branch named by --revision, are created when missing; the custom text of the "
            "repository's README.md is kept. The endpoint is HF_ENDPOINT (see docs/sharing.md)."
        ),
    )
    push.add_argument("folder", help="the saved pipeline folder")
    push.add_argument("repo_id", help="the Hub repository, namespace/name")
    push.add_argument("--revision", metavar="BRANCH", help="branch to commit to (default: main)")
    push.add_argument("--token", help=_TOKEN_HELP)
    visibility = push.add_mutually_exclusive_group()
    visibility.add_argument(
        "--private",
        dest="private",
        action="store_const",
        const=True,
        default=None,
        help=(
            "create the repository as private (if it does not exist yet; default: the Hub's "
            "default for the namespace)"
        ),
    )
    visibility.add_argument(
        "--public",
        dest="private",
        action="store_const",
        const=False,
        help="create the repository as public (if it does not exist yet)",
    )
    push.add_argument("-m", "--commit-message", help="commit message (default: a summary)")
    push.add_argument(
        "--create-pr",
        action="store_true",
        help="open a pull request instead of committing to the branch",
    )
    add_json(push, "print a JSON summary")
    push.set_defaults(handler=_cmd_push)


def _add_pull(subparsers: Any, common: argparse.ArgumentParser) -> None:
    pull = subparsers.add_parser(
        "pull",
        parents=[common],
        help="download and check a pipeline from the Hugging Face Hub",
        description=(
            "Download an artifact (config, weights, model card; nothing else) into the Hub cache "
            "pinned to one commit, and check it: format version, installed components, weights "
            "checksum and tensor names, shapes and dtypes. Afterwards it also loads offline "
            "(HF_HUB_OFFLINE=1). Nothing is installed or executed."
        ),
    )
    pull.add_argument("repo_id", help="the Hub repository, namespace/name")
    pull.add_argument("--revision", help="branch, tag or commit (default: main)")
    pull.add_argument("--token", help=_TOKEN_HELP)
    pull.add_argument(
        "--local-dir",
        metavar="DIR",
        help="also copy the files to this folder (loadable with from_pretrained)",
    )
    add_json(pull, "print a JSON summary")
    pull.set_defaults(handler=_cmd_pull)


class _DropResultRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(_RESULT_RECORDS))


@contextlib.contextmanager
def _result_printed_once() -> Iterator[None]:
    """Leave out the library's log line of the result that the command prints on stdout, so that
    it is not shown twice (once on stderr)."""
    hub_logger = logging.getLogger("cotprompt.hub")
    drop = _DropResultRecords()
    hub_logger.addFilter(drop)
    try:
        yield
    finally:
        hub_logger.removeFilter(drop)


def _cmd_push(args: argparse.Namespace) -> int:
    from cotprompt.hub import push_folder

    with _result_printed_once():
        info = push_folder(
            args.folder,
            args.repo_id,
            token=args.token,
            private=args.private,
            revision=args.revision,
            commit_message=args.commit_message,
            create_pr=args.create_pr,
        )
    summary = {
        "repo_id": args.repo_id,
        "commit": getattr(info, "oid", None),
        "commit_url": getattr(info, "commit_url", str(info)),
        "pr_url": getattr(info, "pr_url", None),
    }
    if args.json:
        print_json(summary)
    else:
        write(f"pushed {args.folder} to {args.repo_id}: {summary['commit_url']}")
        if summary["pr_url"]:
            write(f"pull request: {summary['pr_url']}")
    return EXIT_OK


def _cmd_pull(args: argparse.Namespace) -> int:
    from cotprompt.hub import pull

    with _result_printed_once():
        pulled = pull(args.repo_id, revision=args.revision, token=args.token,
                      local_dir=args.local_dir)
    summary = {
        "repo_id": args.repo_id,
        "revision": args.revision,
        "commit": pulled.source["commit"],
        "folder": str(pulled.folder),
        "labels": len(pulled.config["chain"]["labels"]),
        "tuner": pulled.config["tuner"]["name"],
    }
    if args.json:
        print_json(summary)
    else:
        write(
            f"pulled {args.repo_id} at commit {summary['commit']} into {summary['folder']} "
            f"({summary['tuner']}, {summary['labels']} labels)"
        )
    return EXIT_OK
