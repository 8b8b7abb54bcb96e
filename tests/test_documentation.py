"""The README and the pages in documentation/ are checked against the repository and the real CLI: every
relative link (files, folders, #anchors) resolves inside the repository, every `nnunet-dino ...` line in
their code blocks parses with `nnunet_dino.cli.build_parser()`, and every command's --help ends with one
example line that parses too. The README stays a front door (at most 150 lines)."""
import argparse
import contextlib
import glob
import io
import os
import re
import shlex

import pytest

from nnunet_dino.cli import EXAMPLE_PREFIX, build_parser, installed_version, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
PAGES = sorted(glob.glob(os.path.join(ROOT, "documentation", "*.md")))
DOCUMENTS = [README] + PAGES
README_MAX_LINES = 150

FENCE = re.compile(r"^ {0,3}```.*?^ {0,3}```[ \t]*$", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.M)
HTML_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")


def _relative(path: str) -> str:
    return os.path.relpath(path, ROOT)


def heading_anchors(markdown: str) -> set:
    """The #anchors GitHub gives a page's headings (lower case, punctuation dropped, spaces -> '-',
    repeats numbered), plus explicit <a id=...> anchors."""
    anchors, seen = set(HTML_ANCHOR.findall(markdown)), {}
    for title in HEADING.findall(FENCE.sub("", markdown)):
        text = re.sub(r"[`*_]|<[^>]+>", "", title).strip().lower()
        slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def relative_links(markdown: str) -> list:
    """Targets of the page's Markdown links and images that are not URLs, outside code."""
    prose = INLINE_CODE.sub("", FENCE.sub("", markdown))
    return [t for t in LINK.findall(prose) if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.I)]


def broken_links(path: str, markdown: str = None) -> list:
    """What is wrong with the relative links of the page at `path` (its text: `markdown`, default the file's)."""
    problems = []
    markdown = open(path).read() if markdown is None else markdown
    for target in relative_links(markdown):
        file_part, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(path), file_part))
        if not file_part:
            anchors = heading_anchors(markdown)
        elif not resolved.startswith(ROOT + os.sep):
            problems.append(f"{_relative(path)}: {target} leaves the repository")
            continue
        elif not os.path.exists(resolved):
            problems.append(f"{_relative(path)}: {target} does not exist")
            continue
        else:
            anchors = heading_anchors(open(resolved).read()) if resolved.endswith(".md") else None
        if anchor and anchors is not None and anchor not in anchors:
            problems.append(f"{_relative(path)}: {target}: no heading #{anchor} there")
    return problems


def command_lines(markdown: str) -> list:
    """(line number, command) of every `nnunet-dino ...` line in the fenced code blocks, with its
    backslash continuations joined."""
    commands = []
    for block in FENCE.finditer(markdown):
        first_line = markdown.count("\n", 0, block.start()) + 1
        lines = block.group(0).splitlines()[1:-1]
        index = 0
        while index < len(lines):
            number, text = first_line + 1 + index, lines[index].strip()
            while text.endswith("\\") and index + 1 < len(lines):
                index += 1
                text = text[:-1] + " " + lines[index].strip()
            if text.startswith("$ "):
                text = text[2:]
            if text.startswith("nnunet-dino ") or text == "nnunet-dino":
                commands.append((number, text))
            index += 1
    return commands


def parse_error(command: str):
    """None if `command` parses with the real CLI parser, else argparse's message."""
    tokens = shlex.split(command, comments=True)
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(tokens[1:])
    except SystemExit as exit_:
        if exit_.code not in (0, None):  # --help and --version exit 0
            return stderr.getvalue().strip().splitlines()[-1] if stderr.getvalue().strip() else f"exit {exit_.code}"
    return None


def every_parser(parser: argparse.ArgumentParser, name: str = "nnunet-dino"):
    """(command line, parser) of the program and of every command and sub-command below it."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child_name, child in action.choices.items():
                yield from every_parser(child, f"{name} {child_name}")


def test_the_documentation_pages_exist_and_the_readme_links_each():
    assert PAGES, "documentation/ holds no pages"
    linked = {os.path.normpath(os.path.join(ROOT, t.partition("#")[0])) for t in relative_links(open(README).read())}
    assert not [_relative(p) for p in PAGES if p not in linked and not p.endswith("README.md")]


def test_the_readme_is_read_in_five_minutes():
    with open(README) as f:
        assert len(f.read().splitlines()) <= README_MAX_LINES


@pytest.mark.parametrize("path", DOCUMENTS, ids=_relative)
def test_every_relative_link_resolves(path):
    assert broken_links(path) == []


@pytest.mark.parametrize("path", DOCUMENTS, ids=_relative)
def test_every_nnunet_dino_line_parses_with_the_real_parser(path):
    failures = [f"{_relative(path)}:{number}: {command}\n    -> {error}"
                for number, command in command_lines(open(path).read())
                if (error := parse_error(command)) is not None]
    assert not failures, "\n".join(failures)


def test_the_link_and_command_checks_catch_what_they_should():
    """The checks themselves: a missing file, a wrong anchor, a link out of the repository, a bad command."""
    page = os.path.join(ROOT, "documentation", "probe.md")  # a page that is not written: its text is given
    markdown = ("# A title\n[ok](#a-title) [bad](#nowhere) [gone](missing.md) [out](../../x.md) "
                "[url](https://example.org) `[code](not-checked.md)`\n```bash\nnnunet-dino bench --batch 2\n"
                "nnunet-dino bench \\\n    --batch two\n```\n")
    assert heading_anchors(markdown) == {"a-title"}
    assert relative_links(markdown) == ["#a-title", "#nowhere", "missing.md", "../../x.md"]
    problems = broken_links(page, markdown)
    assert len(problems) == 3 and "#nowhere" in problems[0] and "does not exist" in problems[1], problems
    assert "leaves the repository" in problems[2]
    assert command_lines(markdown) == [(4, "nnunet-dino bench --batch 2"), (5, "nnunet-dino bench  --batch two")]
    assert "invalid int value" in parse_error("nnunet-dino bench --batch two")
    assert parse_error("nnunet-dino bench --batch 2  # a comment") is None


@pytest.mark.parametrize("name", [name for name, _ in every_parser(build_parser())])
def test_every_help_ends_with_one_example_that_parses(name):
    parser = dict(every_parser(build_parser()))[name]
    last = parser.format_help().rstrip().splitlines()[-1]
    assert last.startswith(f"{EXAMPLE_PREFIX}{name}"), f"`{name} --help` ends with {last!r}"
    assert parse_error(last[len(EXAMPLE_PREFIX):]) is None, last


def test_version_is_the_installed_packages(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"nnunet-dino {installed_version()}"
    from importlib.metadata import version
    assert installed_version() == version("nnunet-dino")
