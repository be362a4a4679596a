"""The stream parser (:mod:`sat.core.xmpp.parser`) builds the trees Twisted's parser builds.

Each document is parsed by both, fed in every possible split (TLS records cut stanzas
anywhere), and the trees compared field by field: names, namespaces, default namespaces,
attributes (namespaced ones as (uri, name) keys), text, order of children. Declared
prefixes are recorded on the element using them (Twisted: on the one declaring them), so
they are compared through the XML each tree serialises to, canonicalised. Limits and
errors are Twisted's too.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from twisted.words.xish import domish

from sat.core.xmpp.parser import ElementStream, StanzaElement

HEADER = (
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
    b"from='example.org' id='s1' version='1.0' xml:lang='en'>"
)

STANZAS = [
    # plain message with text split by entities and a CDATA section
    b"<message from='a@example.org/r' to='b@example.org' type='chat' id='1'>"
    b"<body>caf\xc3\xa9 &amp; &lt;b&gt; <![CDATA[<raw>]]> end</body>"
    b"<active xmlns='http://jabber.org/protocol/chatstates'/></message>",
    # MAM-wrapped message: nested default namespaces
    b"<message to='b@example.org'><result xmlns='urn:xmpp:mam:2' id='x' queryid='q'>"
    b"<forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp='2026-01-01T"
    b"00:00:00Z'/><message xmlns='jabber:client' from='c@example.org' type='chat'>"
    b"<body>archived</body></message></forwarded></result></message>",
    # prefixed elements and namespaced attributes
    b"<iq type='result' id='2' xmlns:p='urn:example:p'><p:query p:attr='v' xml:lang='fr' "
    b"plain='w'><p:item>one</p:item>mixed<item>two</item></p:query></iq>",
    # whitespace-only and mixed content kept as Twisted keeps it
    b"<presence>\n  <show>away</show>\n  <status>brb</status>\n</presence>",
    # empty element, attribute with quotes
    b"<message id='q&apos;&quot;'/>",
]


def canonical(xml: str) -> tuple:
    """An XML document with its names resolved to (namespace, name): equal for equivalent
    documents, whatever their prefixes and wherever those are declared."""

    def walk(elt) -> tuple:
        return (elt.tag, sorted(elt.attrib.items()), elt.text, elt.tail, [walk(c) for c in elt])

    return walk(ET.fromstring(xml))


def tree(elt) -> tuple:
    """What a domish element holds, recursively (parent links checked too), but where its
    namespace prefixes are declared."""
    children = []
    for child in elt.children:
        if isinstance(child, str):
            children.append(child)
        else:
            assert child.parent is elt
            children.append(tree(child))
    return (
        elt.uri,
        elt.name,
        elt.defaultUri,
        dict(elt.attributes),
        tuple(children),
    )


def parse_all(stream, chunks) -> tuple[list, list]:
    roots, stanzas = [], []
    stream.DocumentStartEvent = roots.append
    stream.ElementEvent = stanzas.append
    stream.DocumentEndEvent = lambda: roots.append("end")
    for chunk in chunks:
        stream.parse(chunk)
    return roots, stanzas


def splits(data: bytes, step: int):
    return [data[i : i + step] for i in range(0, len(data), step)]


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64, 100_000])
def test_same_trees_as_twisted_whatever_the_splits(step):
    document = HEADER + b"".join(STANZAS) + b"</stream:stream>"
    ours_roots, ours = parse_all(ElementStream(), splits(document, step))
    theirs_roots, theirs = parse_all(domish.ExpatElementStream(), splits(document, step))
    assert len(ours) == len(theirs) == len(STANZAS)
    assert [tree(e) for e in ours] == [tree(e) for e in theirs]
    assert tree(ours_roots[0]) == tree(theirs_roots[0])
    assert ours_roots[0].localPrefixes == theirs_roots[0].localPrefixes  # the stream header
    assert ours_roots[-1] == theirs_roots[-1] == "end"
    assert all(e.parent is None for e in ours)
    assert all(isinstance(e, StanzaElement) for e in ours)
    # serialised back, they are the same XML (prefixed parts: equivalent XML)
    assert [canonical(e.toXml()) for e in ours] == [canonical(e.toXml()) for e in theirs]
    unprefixed = [i for i, raw in enumerate(STANZAS) if b"xmlns:" not in raw]
    assert [ours[i].toXml() for i in unprefixed] == [theirs[i].toXml() for i in unprefixed]


def test_child_lookups_match_domish():
    _, (message, mam, iq, presence, _empty) = parse_all(ElementStream(), [HEADER, *STANZAS])
    assert [c.name for c in message.elements()] == ["body", "active"]
    assert list(message.elements("http://jabber.org/protocol/chatstates", "active"))
    assert not list(message.elements("jabber:client", "active"))
    assert str(message.body) == "café & <b> <raw> end"
    assert message.subject is None
    assert mam.result.forwarded.message.body is not None
    assert [c.name for c in iq.query.elements()] == ["item", "item"]
    assert [c.name for c in presence.elements()] == ["show", "status"]
    with pytest.raises(AttributeError):
        message._private  # noqa: B018  (underscore names are not child lookups)
    # an element added later by code (plain domish.Element) is found as well
    added = message.addElement(("urn:example", "extra"))
    assert next(message.elements("urn:example", "extra")) is added


def test_text_is_joined_in_one_piece():
    body = "word " * 5000
    _, (message,) = parse_all(
        ElementStream(), [HEADER, f"<message><body>{body}</body></message>".encode()]
    )
    assert message.body.children == [body]


def test_malformed_xml_is_a_parser_error():
    stream = ElementStream()
    parse_all(stream, [HEADER])
    with pytest.raises(domish.ParserError):
        stream.parse(b"<message><body>unclosed</message>")


def test_stanza_size_and_element_count_are_capped():
    stream = ElementStream()
    stream.maxStanzaSize = 1000
    parse_all(stream, [HEADER])
    with pytest.raises(domish.ParserError, match="size"):
        stream.parse(b"<message><body>" + b"x" * 2000)

    stream = ElementStream()
    stream.maxElementCount = 10
    parse_all(stream, [HEADER])
    with pytest.raises(domish.ParserError, match="element count"):
        stream.parse(b"<message>" + b"<x/>" * 20 + b"</message>")


def test_caps_are_per_stanza():
    stream = ElementStream()
    stream.maxStanzaSize = 3000
    stream.maxElementCount = 10
    parse_all(stream, [HEADER])
    got = []
    stream.ElementEvent = got.append
    for _ in range(50):  # many stanzas, each under the caps: never refused
        stream.parse(b"<message><body>" + b"y" * 200 + b"</body><a/><b/></message>")
    assert len(got) == 50


def test_the_client_stream_uses_it():
    from twisted.words.protocols.jabber import xmlstream

    from sat.core.xmpp.client import SatXmlStream

    xs = SatXmlStream(xmlstream.Authenticator())
    xs._initializeStream()
    assert isinstance(xs.stream, ElementStream)
    got = []
    xs.addObserver("/message", got.append)
    xs.dataReceived(HEADER + STANZAS[0])
    assert len(got) == 1 and isinstance(got[0], StanzaElement)


def test_dispatch_skips_other_roots_but_keeps_twisted_semantics():
    from twisted.words.protocols.jabber import xmlstream

    from sat.core.xmpp.client import SatXmlStream

    xs = SatXmlStream(xmlstream.Authenticator())
    xs._initializeStream()
    seen = []
    xs.addObserver("/iq", lambda e: seen.append("iq"))
    xs.addObserver("/message", lambda e: seen.append("message"))
    xs.addObserver("/*", lambda e: seen.append("any"), priority=10)
    xs.addObserver("//event", lambda e: seen.append("deep event"))
    xs.addOnetimeObserver("/message/body", lambda e: seen.append("once"), priority=5)
    # an observer added while dispatching takes effect after the dispatch
    xs.addObserver("/presence", lambda e: xs.addObserver("/presence", seen.append))
    xs.dataReceived(HEADER)
    xs.dataReceived(b"<message><body>x</body><x><event xmlns='urn:e'/></x></message>")
    # priorities first, then the order of registration; "//event" looks deeper than the root
    assert seen == ["any", "once", "message", "deep event"]
    seen.clear()
    xs.dataReceived(b"<message><body>y</body></message>")
    assert sorted(seen) == ["any", "message"]  # the one-time observer is gone
    seen.clear()
    xs.dataReceived(b"<iq type='get' id='1'/>")
    assert sorted(seen) == ["any", "iq"]
    seen.clear()
    xs.dataReceived(b"<presence/>")
    assert seen == ["any"]
    xs.dataReceived(b"<presence/>")
    assert len(seen) == 3 and seen[-1].name == "presence"  # the observer added meanwhile


def test_prefiltered_dispatch_picks_the_observers_twisted_would():
    from twisted.words.protocols.jabber import xmlstream
    from twisted.words.xish import xpath

    from sat.core.xmpp.client import SatXmlStream

    queries = [
        "/message",
        "/message[@type='error']",
        "/message/result[@xmlns='urn:xmpp:mam:2']",
        "/message/event[@xmlns='urn:e']",
        "/message/event[@xmlns='urn:e']/items[@node='n']",
        "/message/body",
        "/message/x/event",
        "/iq[@type='get']/query[@xmlns='urn:q']",
        "/iq/query",
        "/*",
        "//event",
    ]
    stanzas = [
        "<message><body>x</body></message>",
        "<message type='error'><error/></message>",
        "<message><result xmlns='urn:xmpp:mam:2'/></message>",
        "<message><result xmlns='urn:other'/></message>",
        "<message><event xmlns='urn:e'><items node='n'/></event></message>",
        "<message><event xmlns='urn:e'><items node='m'/></event></message>",
        "<message><event xmlns='urn:f'/></message>",
        "<message><x><event xmlns='urn:e'/></x>text</message>",
        "<iq type='get' id='1'><query xmlns='urn:q'/></iq>",
        "<iq type='set' id='2'><query xmlns='urn:q'/></iq>",
        "<iq type='get' id='3'><query xmlns='urn:r'/></iq>",
        "<presence><event xmlns='urn:e'/></presence>",
    ]
    xs = SatXmlStream(xmlstream.Authenticator())
    xs._initializeStream()
    seen = []
    for query in queries:
        xs.addObserver(query, lambda e, q=query: seen.append(q))
    xs.dataReceived(HEADER)
    for text in stanzas:
        seen.clear()
        xs.dataReceived(text.encode())
        # the oracle: Twisted's own XPath evaluation of every query on the same stanza
        element = _parse_one(text)
        expected = [q for q in queries if xpath.internQuery(q).matches(element)]
        assert sorted(seen) == sorted(expected), text


def _parse_one(text: str):
    got = []
    stream = ElementStream()
    stream.DocumentStartEvent = lambda root: None
    stream.ElementEvent = got.append
    stream.parse(HEADER + text.encode())
    return got[0]


def test_prefixed_stream_elements_match_twisted():
    doc = [
        HEADER,
        b"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/>"
        b"</starttls><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
        b"<mechanism>PLAIN</mechanism></mechanisms></stream:features>",
        b"<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
        b"<text xmlns='urn:ietf:params:xml:ns:xmpp-streams' xml:lang='en'>bye</text>"
        b"</stream:error>",
    ]
    _, ours = parse_all(ElementStream(), doc)
    _, theirs = parse_all(domish.ExpatElementStream(), doc)
    assert [tree(e) for e in ours] == [tree(e) for e in theirs]
    assert [(e.uri, e.name, e.defaultUri) for e in ours] == [
        ("http://etherx.jabber.org/streams", "features", "jabber:client"),
        ("http://etherx.jabber.org/streams", "error", "jabber:client"),
    ]
    assert [canonical(e.toXml()) for e in ours] == [canonical(e.toXml()) for e in theirs]
