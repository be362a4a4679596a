"""A faster stream parser building the same ``domish`` trees as Twisted's.

Every stanza a profile receives goes through the XML parser, and every plugin hook then
walks the stanza's children. Twisted's ``domish.ExpatElementStream`` and
``domish.Element.elements()`` cost more than they need to, for two reasons measured in
the receive loop (``bench/pipeline_probe.py``):

* ``Element.elements()`` checks each child with ``IElement.providedBy`` (a zope.interface
  lookup) inside a generator: ~135 such checks per received message, 8 % of the daemon's
  time under a flood;
* the expat callbacks do general work per element (splitting every attribute name,
  building the element through ``__init__`` and its namespace search), two more callbacks
  run for every namespace declaration (nearly every XMPP element declares one), and
  character data arrives in pieces because expat's ``buffer_text`` is off.

Here expat reports names with their prefix (``namespace_prefixes``): an unprefixed element's
default namespace is its own, a prefixed one inherits its parent's; so after the stream
header, whose declarations are read as Twisted does, no namespace callback is needed. The
one difference: a prefix is recorded (``localPrefixes``) on the element using it rather
than on the one declaring it, which serialises to equivalent XML.

:class:`ElementStream` is a drop-in for ``domish.elementStream()`` (same events, same
size and element-count limits, same ``ParserError``) that builds :class:`StanzaElement`
trees: plain ``domish.Element`` objects (same ``uri``, ``name``, ``defaultUri``,
``localPrefixes``, ``attributes``, ``children``, ``parent``) whose child iteration checks
``isinstance(child, str)`` instead: children of a parsed element are only text or elements.
"""

from __future__ import annotations

import pyexpat

from twisted.words.xish import domish

__all__ = ["ElementStream", "StanzaElement"]


class StanzaElement(domish.Element):
    """A ``domish.Element`` made by :class:`ElementStream`, with cheaper child lookups.

    Behaves as its base class; only ``elements()`` and attribute-style child access
    (``elt.body``) are reimplemented, without the per-child interface check.
    """

    def elements(self, uri=None, name=None):
        if name is None:
            return (c for c in self.children if not isinstance(c, str))
        return (
            c for c in self.children if not isinstance(c, str) and c.name == name and c.uri == uri
        )

    def __getattr__(self, key):
        # only called when normal lookup failed: first child element named ``key``
        if key.startswith("_"):
            raise AttributeError(key)
        for c in self.__dict__.get("children", ()):
            if not isinstance(c, str) and c.name == key:
                return c
        return None


_new_element = StanzaElement.__new__


class ElementStream:
    """Expat-driven builder of ``domish`` trees for an XML stream (see module doc)."""

    #: per-stanza caps, as Twisted's (reset when a stanza is complete): a contact cannot
    #: make the daemon buffer or build without bound
    maxStanzaSize = 10 * 1024 * 1024
    maxElementCount = 100000

    def __init__(self):
        self.DocumentStartEvent = None
        self.ElementEvent = None
        self.DocumentEndEvent = None
        self.error = pyexpat.error
        parser = self.parser = pyexpat.ParserCreate("UTF-8", " ")
        # character data in one piece per text node instead of one call per line/buffer
        parser.buffer_text = True
        # "uri local prefix" for prefixed names: tells where the default namespace applies
        parser.namespace_prefixes = True
        parser.StartElementHandler = self._on_start
        parser.EndElementHandler = self._on_end
        parser.CharacterDataHandler = self._on_text
        parser.StartNamespaceDeclHandler = self._on_start_namespace
        parser.EndNamespaceDeclHandler = self._on_end_namespace
        self.current = None
        self.default_ns = [""]
        self.document_started = False
        self.prefixes: dict | None = None
        self.element_count = 0
        self.stanza_size = 0

    # Twisted's stream exposes ``currElem``; keep the name readable for code that looks
    @property
    def currElem(self):
        return self.current

    def parse(self, buffer: bytes) -> None:
        self.stanza_size += len(buffer)
        try:
            self.parser.Parse(buffer)
        except pyexpat.error as e:
            raise domish.ParserError(str(e)) from None
        if self.stanza_size > self.maxStanzaSize:
            raise domish.ParserError("Maximum stanza size exceeded")

    def _on_start(self, name: str, attrs: dict) -> None:
        e = _new_element(StanzaElement)
        e.children = []
        if not self.document_started:
            self._on_root(e, name.split(" "), attrs)
            return
        parent = self.current
        uri, spaced, local = name.partition(" ")
        if not spaced:  # no namespace at all
            e.uri = e.defaultUri = ""
            e.name = name
            prefixes = {}
        elif " " in local:  # prefix:name, in the default namespace of its parent
            local, prefix = local.split(" ")
            e.uri = uri
            e.name = local
            e.defaultUri = parent.defaultUri if parent is not None else self.default_ns[-1]
            prefixes = {prefix: uri}
        else:  # the usual case: an unprefixed element, in its own default namespace
            e.uri = e.defaultUri = uri
            e.name = local
            prefixes = {}
        if attrs and " " in "\0".join(attrs):
            self._namespaced_attributes(attrs, prefixes)
        e.attributes = attrs
        e.localPrefixes = prefixes
        self.element_count += 1
        if self.element_count > self.maxElementCount:
            raise domish.ParserError("Maximum element count exceeded")
        e.parent = parent
        if parent is not None:
            parent.children.append(e)
        self.current = e

    def _on_root(self, e: StanzaElement, parts: list, attrs: dict) -> None:
        """The stream header: its declarations (read by the namespace callbacks) as Twisted
        records them; the callbacks are not needed after it."""
        if len(parts) == 1:
            e.uri, e.name = "", parts[0]
        else:
            e.uri, e.name = parts[0], parts[1]
        e.defaultUri = self.default_ns[-1]
        e.localPrefixes = self.prefixes or {}
        self.prefixes = None
        if attrs and " " in "\0".join(attrs):
            self._namespaced_attributes(attrs, {})
        e.attributes = attrs
        e.parent = None
        self.document_started = True
        self.parser.StartNamespaceDeclHandler = None
        self.parser.EndNamespaceDeclHandler = None
        self.DocumentStartEvent(e)

    @staticmethod
    def _namespaced_attributes(attrs: dict, prefixes: dict) -> None:
        """Keys ``"uri local [prefix]"`` from expat become ``(uri, local)``, as Twisted's."""
        for key in [k for k in attrs if " " in k]:
            uri, local, *prefix = key.split(" ")
            attrs[(uri, local)] = attrs.pop(key)
            if prefix and prefix[0] != "xml":
                prefixes[prefix[0]] = uri

    def _on_end(self, _name: str) -> None:
        current = self.current
        if current is None:
            self.DocumentEndEvent()
            return
        parent = current.parent
        if parent is None:
            # a whole stanza: reset the per-stanza caps before handing it out
            self.current = None
            self.element_count = 0
            self.stanza_size = 0
            self.ElementEvent(current)
        else:
            self.current = parent

    def _on_text(self, data: str) -> None:
        current = self.current
        if current is not None:
            children = current.children
            if children and isinstance(children[-1], str):
                children[-1] += data
            else:
                children.append(data)

    def _on_start_namespace(self, prefix: str | None, uri: str) -> None:
        if prefix is None:
            self.default_ns.append(uri)
        else:
            if self.prefixes is None:
                self.prefixes = {}
            self.prefixes[prefix] = uri

    def _on_end_namespace(self, prefix: str | None) -> None:
        if prefix is None:
            self.default_ns.pop()
