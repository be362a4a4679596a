"""XEP-0059: Result Set Management, the ``<set/>`` element other protocols page with.

This is a small helper used by the protocols that page through results (MAM,
XEP-0313, first of all); it sends nothing by itself. Build a request with
:class:`RSMRequest` and read an answer with :func:`parse_response`::

    query.addChild(RSMRequest(max=100, after=last_id).to_element())
    ...
    page = parse_response(fin_elt)  # RSMResponse(first=..., last=..., count=...) or None

What XEP-0059 says and this module follows:

- ``<max/>`` is the most items the requester wants in the page; the responder
  may return fewer (it may enforce its own limit), never more;
- ``<after>id</after>`` asks for the page following an item, ``<before>id</before>``
  the page preceding it, and an *empty* ``<before/>`` the last page of the set;
- ``<index/>`` jumps to an item's position (rarely supported, never needed here);
- the answer's ``<first index='n'>``, ``<last>`` are the ids of the page's first and
  last items (absent for an empty page) and ``<count>`` is the size of the whole
  set (optional: a requester must not depend on it).

Parsing is defensive: the set comes from a remote entity, so a malformed number
is ignored (``None``) rather than raised.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.words.xish import domish

from sat.core.plugin import Plugin

NS_RSM = "http://jabber.org/protocol/rsm"
#: longest id accepted from a remote set (ids are opaque strings; this only bounds memory)
MAX_ID_LENGTH = 1024


def _child(parent: domish.Element, name: str) -> domish.Element | None:
    for child in parent.elements():
        if child.name == name and child.uri == NS_RSM:
            return child
    return None


def _int_or_none(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    if not text.isdigit() or len(text) > 18:
        return None
    return int(text)


def _id_or_none(elt: domish.Element | None) -> str | None:
    if elt is None:
        return None
    value = str(elt)
    if not value or len(value) > MAX_ID_LENGTH:
        return None
    return value


def find_set(parent: domish.Element | None) -> domish.Element | None:
    """The ``<set xmlns='http://jabber.org/protocol/rsm'/>`` child of ``parent``, or None."""
    if parent is None:
        return None
    for child in parent.elements():
        if child.name == "set" and child.uri == NS_RSM:
            return child
    return None


@dataclass
class RSMRequest:
    """What a requester asks for.

    ``before=""`` (empty string) asks for the last page; ``before=None`` means no
    ``<before/>`` at all. ``after`` and ``before`` together are undefined by the XEP:
    refused here.
    """

    max: int | None = None
    after: str | None = None
    before: str | None = None
    index: int | None = None

    def __post_init__(self):
        if self.max is not None and (not isinstance(self.max, int) or self.max < 0):
            raise ValueError(f"RSM max must be a non-negative integer, not {self.max!r}")
        if self.after is not None and self.before is not None:
            raise ValueError("RSM 'after' and 'before' cannot be used together")
        if self.after == "":
            raise ValueError("RSM 'after' needs an item id")
        if self.index is not None and (not isinstance(self.index, int) or self.index < 0):
            raise ValueError(f"RSM index must be a non-negative integer, not {self.index!r}")

    def to_element(self) -> domish.Element:
        set_elt = domish.Element((NS_RSM, "set"))
        if self.max is not None:
            set_elt.addElement("max", content=str(self.max))
        if self.after is not None:
            set_elt.addElement("after", content=self.after)
        if self.before is not None:
            before = set_elt.addElement("before")
            if self.before:
                before.addContent(self.before)
        if self.index is not None:
            set_elt.addElement("index", content=str(self.index))
        return set_elt

    @classmethod
    def parse(cls, set_elt: domish.Element) -> RSMRequest:
        """Read a request (as a responder would; used by tests and fake servers)."""
        max_elt = _child(set_elt, "max")
        before_elt = _child(set_elt, "before")
        after_elt = _child(set_elt, "after")
        index_elt = _child(set_elt, "index")
        request = cls.__new__(cls)
        request.max = _int_or_none(str(max_elt)) if max_elt is not None else None
        request.after = _id_or_none(after_elt)
        request.before = None if before_elt is None else str(before_elt)
        request.index = _int_or_none(str(index_elt)) if index_elt is not None else None
        return request


@dataclass
class RSMResponse:
    """What a responder says about the page it returned."""

    first: str | None = None
    first_index: int | None = None
    last: str | None = None
    count: int | None = None

    def to_element(self) -> domish.Element:
        set_elt = domish.Element((NS_RSM, "set"))
        if self.first is not None:
            first = set_elt.addElement("first", content=self.first)
            if self.first_index is not None:
                first["index"] = str(self.first_index)
        if self.last is not None:
            set_elt.addElement("last", content=self.last)
        if self.count is not None:
            set_elt.addElement("count", content=str(self.count))
        return set_elt


def parse_response(parent: domish.Element | None) -> RSMResponse | None:
    """The RSM answer in ``parent`` (e.g. a MAM ``<fin/>``), or None if it has no ``<set/>``."""
    set_elt = find_set(parent)
    if set_elt is None:
        return None
    first_elt = _child(set_elt, "first")
    count_elt = _child(set_elt, "count")
    return RSMResponse(
        first=_id_or_none(first_elt),
        first_index=(
            _int_or_none(first_elt.getAttribute("index")) if first_elt is not None else None
        ),
        last=_id_or_none(_child(set_elt, "last")),
        count=_int_or_none(str(count_elt)) if count_elt is not None else None,
    )


class RSMPlugin(Plugin):
    name = "XEP-0059"
    label = "Result Set Management"
    xeps = ("XEP-0059",)
    description = "Builds and reads the <set/> element used to page through results."

    NS_RSM = NS_RSM
    RSMRequest = RSMRequest
    RSMResponse = RSMResponse
    parse_response = staticmethod(parse_response)
    find_set = staticmethod(find_set)


PLUGIN = RSMPlugin
