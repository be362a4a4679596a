"""Salut à Toi: a multi-frontend XMPP client daemon."""

__version__ = "0.1.0"
