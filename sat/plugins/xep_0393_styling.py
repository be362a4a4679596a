"""XEP-0393: Message Styling.

The body is kept as typed; this plugin parses it once (sent and received
messages) into spans that frontends render without reparsing:
``data["extra"]["styling"]`` is a list of ``{"type", "start", "end"}`` with
``type`` one of ``strong`` (``*``), ``emphasis`` (``_``), ``strike`` (``~``),
``pre`` (`````` ` ``````), ``pre-block`` (lines between `````` ``` `````` lines) and
``quote`` (lines starting with ``>``). ``start``/``end`` are offsets in the body
string (Python ``str`` indices, i.e. code points; ``end`` excluded). A span
includes its styling directives (the XEP recommends showing them, styled like
the text), a quote starts at its first ``>``; enclosing spans come before the
spans they contain.

A message with ``<unstyled xmlns='urn:xmpp:styling:0'/>`` is not styled
(``extra["unstyled"] = True``); sending with ``extra["unstyled"]`` adds that
hint. ``urn:xmpp:styling:0`` is advertised in disco (the XEP's MUST).

Parsing rules (XEP-0393 §5-6): blocks first (a pre-block starts with a line
beginning with three grave accents and ends at a line made of exactly three,
or at the end of its parent; a quote is a run of lines beginning with ``>``,
whose first ``>`` and one following whitespace character are removed before
its content is parsed as blocks again), then spans inside each plain line: an
opening directive is at the start of the line (or of its parent span) or after
a whitespace character, and is not followed by whitespace nor by the same
character; its closing directive is the first same character after at least one
character, not preceded by whitespace, in the same line (lazy matching); a
``pre`` span's content is not parsed further. The work is linear in the body
(directive positions are indexed once, closers found by bisection), quotes nest
at most :data:`MAX_QUOTE_DEPTH` deep and at most :data:`MAX_SPANS` spans are kept:
a hostile body cannot make the parser slow or deep.
"""

from __future__ import annotations

import bisect
import re
import unicodedata

from twisted.words.xish import domish
from wokkel import disco, iwokkel
from wokkel.subprotocols import XMPPHandler
from zope.interface import implementer

from sat.core.plugin import Plugin

NS_STYLING = "urn:xmpp:styling:0"
SPAN_TYPES = {"*": "strong", "_": "emphasis", "~": "strike", "`": "pre"}
PRE_FENCE = "```"
MAX_QUOTE_DEPTH = 32
MAX_SPANS = 2000
#: after decryption; only reads the body
PRIORITY = 50

_DIRECTIVE = re.compile(r"[*_~`]")
_HAS_STYLING = re.compile(r"[*_~`>]")


def _is_space(char: str) -> bool:
    return char.isspace() or unicodedata.category(char)[0] == "Z"


class _Parser:
    def __init__(self, body: str):
        self.body = body
        self.spans: list[dict] = []
        # closing-directive candidates: same character, not preceded by whitespace
        self.closers: dict[str, list[int]] = {c: [] for c in SPAN_TYPES}
        for match in _DIRECTIVE.finditer(body):
            pos = match.start()
            if pos and not _is_space(body[pos - 1]):
                self.closers[body[pos]].append(pos)

    def add(self, kind: str, start: int, end: int) -> bool:
        if len(self.spans) >= MAX_SPANS:
            return False
        self.spans.append({"type": kind, "start": start, "end": end})
        return True

    def lines(self) -> list[tuple[int, int]]:
        result = []
        start = 0
        body = self.body
        while True:
            newline = body.find("\n", start)
            if newline < 0:
                result.append((start, len(body)))
                return result
            result.append((start, newline))
            start = newline + 1

    def blocks(self, lines: list[tuple[int, int]], depth: int = 0) -> None:
        body = self.body
        i = 0
        count = len(lines)
        while i < count:
            start, end = lines[i]
            if body.startswith(PRE_FENCE, start, end):
                j = i + 1
                while j < count and body[lines[j][0] : lines[j][1]] != PRE_FENCE:
                    j += 1
                last = lines[min(j, count - 1)][1]
                self.add("pre-block", start, last)
                i = j + 1
            elif start < end and body[start] == ">" and depth < MAX_QUOTE_DEPTH:
                children = []
                j = i
                while j < count and lines[j][0] < lines[j][1] and body[lines[j][0]] == ">":
                    child_start, child_end = lines[j]
                    child_start += 1
                    if child_start < child_end and _is_space(body[child_start]):
                        child_start += 1
                    children.append((child_start, child_end))
                    j += 1
                self.add("quote", start, lines[j - 1][1])
                self.blocks(children, depth + 1)
                i = j
            else:
                self.inline(start, end)
                i += 1

    def inline(self, start: int, end: int) -> None:
        """Spans in ``body[start:end]`` (a line, or the content of an enclosing span)."""
        body = self.body
        pos = start
        while pos < end:
            match = _DIRECTIVE.search(body, pos, end)
            if match is None:
                return
            i = match.start()
            char = body[i]
            close = self._opening(i, start, end)
            if close is None:
                pos = i + 1
                continue
            kind = SPAN_TYPES[char]
            if not self.add(kind, i, close + 1):
                return
            if kind != "pre":
                self.inline(i + 1, close)
            pos = close + 1

    def _opening(self, i: int, start: int, end: int) -> int | None:
        """Position of the closing directive if ``i`` opens a span, else None."""
        body = self.body
        char = body[i]
        if i + 1 >= end:
            return None
        following = body[i + 1]
        if following == char or _is_space(following):
            return None
        if i > start and not _is_space(body[i - 1]):
            return None
        candidates = self.closers[char]
        k = bisect.bisect_right(candidates, i + 1)
        if k < len(candidates) and candidates[k] < end:
            return candidates[k]
        return None


def parse_styling(body: str | None) -> list[dict]:
    """The XEP-0393 spans of ``body`` (see the module documentation), enclosing first."""
    if not body or _HAS_STYLING.search(body) is None:
        return []
    parser = _Parser(body)
    parser.blocks(parser.lines())
    return sorted(parser.spans, key=lambda s: (s["start"], -s["end"]))


@implementer(iwokkel.IDisco)
class StylingHandler(XMPPHandler):
    def getDiscoInfo(self, requestor, target, nodeIdentifier=""):
        return [] if nodeIdentifier else [disco.DiscoFeature(NS_STYLING)]

    def getDiscoItems(self, requestor, target, nodeIdentifier=""):
        return []


class StylingPlugin(Plugin):
    name = "XEP-0393"
    label = "Message Styling"
    xeps = ("XEP-0393",)
    description = "Parses *strong*, _emphasis_, ~strike~, `pre`, ``` blocks and > quotes."

    def __init__(self, host):
        super().__init__(host)
        host.hooks.add("message_send", self._on_send, PRIORITY)
        host.hooks.add("message_received", self._on_received, PRIORITY)

    def get_handler(self, client):
        return StylingHandler()

    @staticmethod
    def _style(data: dict) -> None:
        extra = data["extra"]
        extra.pop("styling", None)
        if extra.get("unstyled"):
            return
        spans = parse_styling(data.get("body"))
        if spans:
            extra["styling"] = spans

    def _on_send(self, client, elt: domish.Element, data: dict) -> None:
        extra = data["extra"]
        if extra.get("unstyled"):
            extra["unstyled"] = True
            if not any(c.uri == NS_STYLING and c.name == "unstyled" for c in elt.elements()):
                elt.addElement((NS_STYLING, "unstyled"))
        self._style(data)

    def _on_received(self, client, elt: domish.Element, data: dict) -> None:
        if any(c.uri == NS_STYLING and c.name == "unstyled" for c in elt.elements()):
            data["extra"]["unstyled"] = True
        self._style(data)


PLUGIN = StylingPlugin
