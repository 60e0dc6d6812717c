"""Parse the subset of Quarto markdown the report pages use.

Supported: YAML front matter, markdown text, ```{python} cells whose leading ``#| key: value`` lines are Quarto
cell options (echo, output, fig-cap, fig-alt, label, warning, ...), and Pandoc fenced divs (``::: {.callout-note
collapse="true" title="Tables"}`` ... ``:::``, nestable, around markdown and cells alike), which the fallback
renders as Quarto does: callouts as boxes, collapsible ones as ``<details>``. Anything else stays markdown, so a
page that renders here renders the same way under Quarto.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import yaml

from leam.errors import LeamError

_CELL_START = re.compile(r"^```\{python\b[^}]*\}\s*$")
_CELL_END = re.compile(r"^```\s*$")
_OPTION = re.compile(r"^#\|\s*([\w-]+)\s*:\s*(.*)$")
_DIV_OPEN = re.compile(r"^:{3,}\s*(?:\{(?P<attrs>[^}]*)\}|(?P<bare>[\w-]+))\s*:*\s*$")
_DIV_CLOSE = re.compile(r"^:{3,}\s*$")
_FENCE = re.compile(r"^(```|~~~)")
_ATTRIBUTE = re.compile(r"""\.(?P<cls>[\w-]+)|#(?P<id>[\w-]+)|(?P<key>[\w-]+)=(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<raw>[^\s"']+))""")


@dataclass
class Cell:
    """One piece of a page: ``markdown`` text, a ``code`` cell (``options`` = its ``#|`` options), or the
    opening (``div``: ``options`` = {"classes": [...], "id": str | None, "attributes": {...}}) or closing
    (``enddiv``) line of a fenced div."""

    kind: str  # "markdown" | "code" | "div" | "enddiv"
    source: str
    options: dict = field(default_factory=dict)


def parse_div_attributes(text: str) -> dict:
    """``.callout-note #tables collapse="true"`` -> {"classes": ["callout-note"], "id": "tables",
    "attributes": {"collapse": "true"}} (Pandoc attribute syntax: classes, one id, key=value pairs)."""
    classes, ident, attributes = [], None, {}
    for match in _ATTRIBUTE.finditer(text):
        if match.group("cls"):
            classes.append(match.group("cls"))
        elif match.group("id"):
            ident = match.group("id")
        else:
            value = next(v for v in (match.group("dq"), match.group("sq"), match.group("raw")) if v is not None)
            attributes[match.group("key")] = value
    return {"classes": classes, "id": ident, "attributes": attributes}


@dataclass
class QmdDocument:
    front_matter: dict
    cells: list[Cell]


def parse_qmd(text: str, name: str = "<qmd>") -> QmdDocument:
    lines = text.splitlines()
    front: dict = {}
    start = 0
    if lines and lines[0].strip() == "---":
        try:
            end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
        except StopIteration:
            raise LeamError(f"{name}: front matter opened with '---' is never closed") from None
        try:
            front = yaml.safe_load("\n".join(lines[1:end])) or {}
        except yaml.YAMLError as exc:
            raise LeamError(f"{name}: bad YAML front matter: {str(exc).splitlines()[0]}") from None
        start = end + 1
    cells: list[Cell] = []
    buffer: list[str] = []
    depth = 0
    in_fence = False  # inside a plain ``` block of markdown, where ::: lines are text

    def flush() -> None:
        if any(part.strip() for part in buffer):
            cells.append(Cell("markdown", "\n".join(buffer).strip("\n")))
        buffer.clear()

    index = start
    while index < len(lines):
        line = lines[index]
        if not in_fence and _CELL_START.match(line):
            flush()
            body: list[str] = []
            index += 1
            while index < len(lines) and not _CELL_END.match(lines[index]):
                body.append(lines[index])
                index += 1
            if index >= len(lines):
                raise LeamError(f"{name}: a ```{{python}} cell is never closed")
            options = {}
            while body and _OPTION.match(body[0]):
                key, value = _OPTION.match(body.pop(0)).groups()
                options[key] = yaml.safe_load(value) if value.strip() else None
            cells.append(Cell("code", "\n".join(body), options))
        elif not in_fence and _DIV_CLOSE.match(line):
            if depth == 0:
                raise LeamError(f"{name}: line {index + 1}: ':::' closes no fenced div")
            flush()
            cells.append(Cell("enddiv", ""))
            depth -= 1
        elif not in_fence and _DIV_OPEN.match(line):
            flush()
            match = _DIV_OPEN.match(line)
            attributes = (parse_div_attributes(match.group("attrs")) if match.group("attrs") is not None
                          else {"classes": [match.group("bare")], "id": None, "attributes": {}})
            cells.append(Cell("div", line, attributes))
            depth += 1
        else:
            if _FENCE.match(line.lstrip()):
                in_fence = not in_fence
            buffer.append(line)
        index += 1
    flush()
    if depth:
        raise LeamError(f"{name}: {depth} fenced div(s) opened with ':::' are never closed")
    return QmdDocument(front, cells)
