"""The documentation pages generated from the code, and the mkdocs hooks that build them.

One page per env id (``docs/envs/<scenario_dir>.md``), an index of the ids (``docs/envs/index.md``)
and the command-line reference (``docs/cli.md``) are generated, never written by hand:

* an env page: :mod:`edgelam.agents.docs_env_page`;
* the CLI page is ``edgelam <command> --help`` of every subcommand of
  :func:`edgelam.agents.cli.build_parser`.

``python -m edgelam.agents.docs_site`` (run by ``make docs``) writes the pages into ``docs/``, so
that they can be read in the repository too; ``mkdocs.yml`` names this file as a hook, and
:func:`on_files` builds the site from pages generated at build time, so the site is never older
than the code. :func:`on_config` lays out ``build/docs-api/edgelam`` (links to the package folders)
for mkdocstrings, which looks for the ``edgelam`` namespace by folder name.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

from edgelam.agents.docs_env_page import (
    DOCS,
    ENVS_DIR,
    ROOT,
    cell,
    env_page,
    envs_index,
    markdown_of,
    marker,
    page_path,
    summary_and_body,
)

__all__ = ["api_tree", "cli_page", "env_page", "envs_index", "page_path", "pages", "summary_and_body", "write_pages"]

CLI_PAGE = "cli.md"
API_DIR = ROOT / "build" / "docs-api"
PACKAGE_DIRS = {"envs": "envs", "agents": "agents", "baselines": "baselines", "configs": "configs"}
HELP_COLUMNS = 100  # width of the --help texts on the CLI page

# a reST role as mkdocstrings renders it from a docstring: :func:<code>~a.b</code>
_HTML_ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|attr|data|obj|exc|const):<code>(~?)([^<]*)</code>")


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _help(parser: argparse.ArgumentParser) -> str:
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(HELP_COLUMNS + 2)
    try:
        return parser.format_help().rstrip()
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous


def cli_page() -> str:
    """``edgelam --help`` and ``edgelam <command> --help`` of every subcommand."""
    from edgelam.agents import cli

    parser = cli.build_parser()
    parts = [
        marker("edgelam.agents.cli.build_parser"),
        "",
        "# Command line",
        "",
        markdown_of(cli.__doc__),
        "",
        "```text",
        _help(parser),
        "```",
    ]
    for name, sub in _subcommands(parser).items():
        parts += ["", f"## edgelam {name}", "", cell(sub.description or ""), "", "```text", _help(sub), "```"]
    return "\n".join(parts) + "\n"


def pages(docs_dir: Path = DOCS) -> dict[str, str]:
    """Every generated page: path relative to the docs folder -> Markdown."""
    from edgelam.envs.registration import SPECS

    out = {f"{ENVS_DIR}/index.md": envs_index(SPECS), CLI_PAGE: cli_page()}
    out.update({page_path(spec): env_page(spec, docs_dir) for spec in SPECS})
    return out


def write_pages(docs_dir: Path = DOCS) -> list[Path]:
    """Write :func:`pages` into ``docs_dir``; returns the files."""
    written = []
    for rel, text in pages(docs_dir).items():
        path = docs_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def api_tree(root: Path = API_DIR) -> Path:
    """``root/edgelam/<name>`` links to the package folders (what mkdocstrings reads); returns ``root``."""
    package = root / "edgelam"
    package.mkdir(parents=True, exist_ok=True)
    for name, folder in PACKAGE_DIRS.items():
        link, target = package / name, ROOT / folder
        if link.is_symlink() and link.readlink() != target:  # a checkout that moved
            link.unlink()
        if not link.is_symlink():
            link.symlink_to(target, target_is_directory=True)
    return root


def on_config(config: Any) -> Any:
    """mkdocs hook: lay out :func:`api_tree` before mkdocstrings looks for ``edgelam``."""
    api_tree()
    return config


on_config.mkdocs_priority = 100  # type: ignore[attr-defined]  # before the plugins' on_config (event_priority)


def on_files(files: Any, config: Any) -> Any:
    """mkdocs hook: the generated pages, fresh from the code (replacing copies on disk)."""
    from mkdocs.structure.files import File

    for rel, text in pages(Path(config["docs_dir"])).items():
        existing = files.get_file_from_path(rel)
        if existing is not None:
            files.remove(existing)
        files.append(File.generated(config, rel, content=text))
    return files


def on_page_content(html: str, **_: Any) -> str:
    """mkdocs hook: the reST roles the API reference keeps from docstrings (``:func:`~a.b```) as code."""

    def role(match: re.Match[str]) -> str:
        target = match.group(2)
        return f"<code>{target.rsplit('.', 1)[-1] if match.group(1) else target}</code>"

    return _HTML_ROLE.sub(role, html)


def main(argv: list[str] | None = None) -> int:
    """Write the generated pages into ``--docs`` (default: the repository's docs/)."""
    parser = argparse.ArgumentParser(prog="python -m edgelam.agents.docs_site", description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=Path, default=DOCS, help=f"docs folder (default: {DOCS})")
    args = parser.parse_args(argv)
    for path in write_pages(args.docs):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
