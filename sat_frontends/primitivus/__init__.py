"""Primitivus: the Urwid console client of SàT (``primitivus`` command).

See :mod:`.app` for the layout and the event loop choice, :mod:`.keys` and :mod:`.config`
for what can be configured, and ``doc/primitivus.md`` for the user's guide.
"""
