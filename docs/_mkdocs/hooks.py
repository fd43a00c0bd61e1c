"""mkdocs hooks of the documentation site (mkdocs.yml `hooks:`).

The pages link to repository files outside docs/ (``../benchmarks/results/vpt_cpu.md``,
``../examples/...``), which work on GitHub but are not part of the site, so mkdocs would report
them as broken links. Such a link becomes its text, naming the repository path; a link to a
path that does not exist in the repository stays a warning (an error under ``strict``).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.hooks.cotprompt")

LINK = re.compile(r"(?<!!)\[(?P<text>[^\]\n]+)\]\((?P<target>\.\./[^)\s#]+)(?:#[^)\s]*)?\)")


def on_page_markdown(markdown: str, page: Any, config: Any, **kwargs: Any) -> str:
    docs_dir = Path(config["docs_dir"]).resolve()
    root = Path(config["config_file_path"]).resolve().parent
    source = Path(page.file.abs_src_path).resolve().parent

    def unlink(match: re.Match[str]) -> str:
        target = (source / match["target"]).resolve()
        if target.is_relative_to(docs_dir):
            return match[0]  # a page of the site: mkdocs checks it
        if not target.is_relative_to(root) or not target.exists():
            log.warning("Doc file '%s' links to '%s', which is not in the repository",
                        page.file.src_uri, match["target"])
            return match[0]
        path = target.relative_to(root).as_posix() + ("/" if target.is_dir() else "")
        text = match["text"]
        return text if path.rstrip("/") in text else f"{text} (`{path}` in the repository)"

    return LINK.sub(unlink, markdown)
