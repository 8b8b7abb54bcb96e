"""report.html: the Markdown report as one self-contained HTML file for sharing (figures embedded as
base64 data URIs, styles inline, no script, nothing fetched).

The converter reads only the Markdown the report writes: `#`-headings, pipe tables, `![alt](file.png)`
images, `- ` list items and paragraphs, with inline `code`, **bold** and *italics*. An image whose file
is not in the report folder is an error (the page would show a broken figure)."""
from __future__ import annotations

import base64
import html
import os
import re
from typing import List

from ..errors import MissingInputError

STYLE = """body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}table{border-collapse:collapse;margin:0.6em 0;font-size:0.9em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f0f0f0}code{background:#f4f4f4;
padding:0 3px}img{max-width:100%;border:1px solid #ddd;margin:0.4em 0}h1,h2,h3{border-bottom:1px solid #eee}"""
IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)]+)\)$")


def inline(text: str) -> str:
    """Escape, then `code`, **bold**, *italics* (not inside code)."""
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
            continue
        part = html.escape(part, quote=False)
        part = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", part)
        out.append(re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", part))
    return "".join(out)


def _cells(line: str) -> List[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table(lines: List[str]) -> str:
    head, body = _cells(lines[0]), [_cells(line) for line in lines[2:]]
    rows = ["<tr>" + "".join(f"<th>{inline(c)}</th>" for c in head) + "</tr>"]
    rows += ["<tr>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>" for row in body]
    return "<table>\n" + "\n".join(rows) + "\n</table>"


def _image(alt: str, file: str, folder: str) -> str:
    path = os.path.join(folder, file)
    if not os.path.isfile(path):
        raise MissingInputError(f"the report's figure {path} is missing: write the report again")
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def _item(line: str) -> bool:
    return line.lstrip().startswith(("- ", "* "))


def markdown_to_html(text: str, folder: str) -> str:
    """The body of the page for the report's Markdown; images are read from `folder`."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            blocks.append(f"<h{level}>{inline(line[level:].strip())}</h{level}>")
            i += 1
        elif line.startswith("|"):
            start = i
            while i < len(lines) and lines[i].startswith("|"):
                i += 1
            blocks.append(_table(lines[start:i]))
        elif IMAGE.match(line.strip()):
            blocks.append(_image(*IMAGE.match(line.strip()).groups(), folder))
            i += 1
        elif _item(line):
            items: List[str] = []
            while i < len(lines) and (_item(lines[i]) or (lines[i].startswith("  ") and lines[i].strip())):
                if _item(lines[i]):
                    items.append(lines[i].lstrip()[2:])
                else:  # an indented line continues the item
                    items[-1] += " " + lines[i].strip()
                i += 1
            blocks.append("<ul>\n" + "\n".join(f"<li>{inline(item)}</li>" for item in items) + "\n</ul>")
        else:
            start = i
            while i < len(lines) and lines[i].strip() and not lines[i].startswith(("#", "|")) \
                    and not IMAGE.match(lines[i].strip()) and not _item(lines[i]):
                i += 1
            blocks.append(f"<p>{inline(' '.join(l.strip() for l in lines[start:i]))}</p>")
    return "\n".join(blocks)


def write_html(markdown_text: str, folder: str, path: str, title: str) -> str:
    """Write the self-contained page; returns its path."""
    page = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"<style>{STYLE}</style>\n</head>\n<body>\n{markdown_to_html(markdown_text, folder)}\n</body>\n</html>\n")
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path
