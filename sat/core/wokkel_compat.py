"""Make wokkel 18 importable on current Twisted.

wokkel 18.0.0 still imports two names that Twisted removed:

* ``twisted.python.compat._PY3`` (gone since Twisted 21.2), used by
  ``wokkel.data_form`` and ``wokkel.muc``;
* the ``twisted.python.constants`` module (gone since Twisted 24.11; it now
  lives in the ``constantly`` package), used by ``wokkel.muc``.

Importing this module (``sat.core.wokkel_compat``) before any ``wokkel``
module puts both back. It is idempotent and changes nothing else.
"""

import sys

import twisted.python.compat as _compat

if not hasattr(_compat, "_PY3"):
    _compat._PY3 = True
if not hasattr(_compat, "unicode"):
    _compat.unicode = str
if not hasattr(_compat, "iteritems"):
    _compat.iteritems = lambda d: iter(d.items())

if "twisted.python.constants" not in sys.modules:
    try:
        import twisted.python.constants  # noqa: F401
    except ImportError:
        import constantly

        sys.modules["twisted.python.constants"] = constantly

#: wokkel modules the project uses; tests/unit/test_wokkel_compat.py imports each.
USED_WOKKEL_MODULES = (
    "wokkel.client",
    "wokkel.data_form",
    "wokkel.delay",
    "wokkel.disco",
    "wokkel.generic",
    "wokkel.iwokkel",
    "wokkel.muc",
    "wokkel.ping",
    "wokkel.pubsub",
    "wokkel.subprotocols",
    "wokkel.xmppim",
)
