"""Message styling (XEP-0393): spans to styled segments, and a fallback parser.

The daemon's styling plugin puts the spans of a message in ``extra["styling"]`` (a list of
``{type, start, end}`` over the body, ``end`` exclusive, directives included). When a message
has no such key (the plugin is not loaded, or history from before it), :func:`parse` finds the
same spans here, so text looks the same either way. :func:`segments` cuts a body into
``(styles, text)`` pieces a UI maps to its own attributes.

Rules followed (XEP-0393 section 6): ``*strong*``, ``_emphasis_``, ``~strike~`` and
```` `pre` ```` spans never cross a line; an opening directive starts a line or follows a
space (or another opening directive) and is followed by a non-space character; a closing one
follows a non-space character; a span is never empty; nothing inside a ``pre`` span is styled.
Blocks: a line starting with ``>`` is a quote; a line starting with ```` ``` ```` opens a
preformatted block that ends with a line holding only ```` ``` ```` (or at the end of the
message). Directives are kept in the text, as the XEP recommends.
"""

from __future__ import annotations

__all__ = ["parse", "segments", "DIRECTIVES"]

DIRECTIVES = {"*": "strong", "_": "emphasis", "~": "strike", "`": "pre"}


def _spans_in_line(line: str, base: int, out: list) -> None:
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if (
            c in DIRECTIVES
            and (i == 0 or line[i - 1].isspace() or line[i - 1] in DIRECTIVES)
            and i + 1 < n
            and not line[i + 1].isspace()
        ):
            j = line.find(c, i + 2)
            while j != -1 and line[j - 1].isspace():
                j = line.find(c, j + 1)
            if j != -1:
                kind = DIRECTIVES[c]
                out.append((kind, base + i, base + j + 1))
                if kind != "pre":
                    _spans_in_line(line[i + 1 : j], base + i + 1, out)
                i = j + 1
                continue
        i += 1


def parse(body: str) -> list[tuple[str, int, int]]:
    """The XEP-0393 spans of ``body``: (type, start, end) with end exclusive."""
    if not body or not any(c in body for c in "*_~`>"):
        return []
    spans: list[tuple[str, int, int]] = []
    lines = body.split("\n")
    offsets = []
    pos = 0
    for line in lines:
        offsets.append(pos)
        pos += len(line) + 1
    i = 0
    while i < len(lines):
        line, start = lines[i], offsets[i]
        if line.startswith("```"):
            j = i + 1
            while j < len(lines) and lines[j].rstrip() != "```":
                j += 1
            last = min(j, len(lines) - 1)
            spans.append(("pre_block", start, offsets[last] + len(lines[last])))
            i = j + 1
            continue
        if line.startswith(">"):
            spans.append(("quote", start, start + len(line)))
            content = line.lstrip(">")
            skip = len(line) - len(content)
            if content.startswith(" "):
                content, skip = content[1:], skip + 1
            _spans_in_line(content, start + skip, spans)
        else:
            _spans_in_line(line, start, spans)
        i += 1
    return spans


def segments(body: str, spans) -> list[tuple[frozenset, str]]:
    """Cut ``body`` into (styles, text) pieces; styles is a frozenset of span types."""
    if not spans:
        return [(frozenset(), body)] if body else []
    points = {0, len(body)}
    for _kind, start, end in spans:
        points.add(max(0, min(len(body), start)))
        points.add(max(0, min(len(body), end)))
    cuts = sorted(points)
    out: list[tuple[frozenset, str]] = []
    for a, b in zip(cuts, cuts[1:], strict=False):
        if a >= b:
            continue
        styles = frozenset(kind for kind, start, end in spans if start <= a and b <= end)
        if out and out[-1][0] == styles:
            out[-1] = (styles, out[-1][1] + body[a:b])
        else:
            out.append((styles, body[a:b]))
    return out
