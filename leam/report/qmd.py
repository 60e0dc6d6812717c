"""Parse the subset of Quarto markdown the report pages use.

Supported: YAML front matter, markdown text, ```{python} cells whose leading ``#| key: value`` lines are Quarto
cell options (echo, output, fig-cap, label, warning, ...). Anything else stays markdown, so a page that renders
here renders the same way under Quarto.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import yaml

from leam.errors import LeamError

_CELL_START = re.compile(r"^```\{python\b[^}]*\}\s*$")
_CELL_END = re.compile(r"^```\s*$")
_OPTION = re.compile(r"^#\|\s*([\w-]+)\s*:\s*(.*)$")


@dataclass
class Cell:
    kind: str  # "markdown" | "code"
    source: str
    options: dict = field(default_factory=dict)


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
    index = start
    while index < len(lines):
        line = lines[index]
        if _CELL_START.match(line):
            if any(part.strip() for part in buffer):
                cells.append(Cell("markdown", "\n".join(buffer).strip("\n")))
            buffer = []
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
        else:
            buffer.append(line)
        index += 1
    if any(part.strip() for part in buffer):
        cells.append(Cell("markdown", "\n".join(buffer).strip("\n")))
    return QmdDocument(front, cells)
