"""``twistd sat``: the Salut à Toi daemon as a twistd service maker.

This file is installed into ``site-packages/twisted/plugins/`` (the
``twisted.plugins`` namespace: there is deliberately no ``__init__.py`` beside
it nor in ``twisted/``). It must stay cheap to import, since twistd imports
every plugin to list them: the daemon's code (``sat.core.service``, which
provides ``Options`` and ``makeService``) is only imported when ``twistd sat``
is actually used.

Usage: ``twistd -n sat --help``; ``twistd --reactor=asyncio -n sat --bus session``.
The daemon needs Twisted's asyncio reactor: ``twistd sat`` installs it when no
``--reactor`` is given, and refuses to start with any other reactor.
"""

from twisted.application.service import ServiceMaker

sat = ServiceMaker(
    "Salut à Toi",
    "sat.core.service",
    "Salut à Toi XMPP client daemon (D-Bus bridge); needs --reactor=asyncio or none",
    "sat",
)
