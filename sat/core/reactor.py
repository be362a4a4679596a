"""Install Twisted's asyncio reactor; every entry point calls this first.

The daemon shares one event loop between Twisted (XMPP streams) and asyncio
libraries (dbus-fast). Installing a reactor must happen before anything
imports ``twisted.internet.reactor``, so entry points call
:func:`install_asyncio_reactor` before their other imports.
"""

import asyncio
import sys


def install_asyncio_reactor():
    """Install the asyncio reactor if no reactor is installed yet; return it.

    Raises RuntimeError if another reactor type was already installed, since
    the D-Bus bridge cannot run on it.
    """
    if "twisted.internet.reactor" in sys.modules:
        from twisted.internet import reactor

        if type(reactor).__name__ != "AsyncioSelectorReactor":
            raise RuntimeError(
                f"reactor {type(reactor).__name__} already installed; SàT needs the asyncio reactor"
            )
        return reactor
    from twisted.internet import asyncioreactor

    try:
        loop = asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
    asyncioreactor.install(loop)
    from twisted.internet import reactor

    return reactor
