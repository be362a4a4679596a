"""Salut à Toi: a multi-frontend XMPP client daemon."""

__version__ = "0.1.0"

# wokkel 18 needs two names Twisted removed; every backend module is below this
# package, so installing the shim here runs it before any ``import wokkel``.
from sat.core import wokkel_compat as _wokkel_compat  # noqa: E402,F401
