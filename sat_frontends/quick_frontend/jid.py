"""Tiny JID helpers (string based: frontends do not need full stringprep here)."""

from __future__ import annotations

__all__ = ["bare", "resource", "node", "domain", "is_valid", "full"]


def bare(jid: str) -> str:
    """``user@host/res`` -> ``user@host``."""
    return jid.split("/", 1)[0]


def resource(jid: str) -> str:
    """``user@host/res`` -> ``res`` ('' if none)."""
    parts = jid.split("/", 1)
    return parts[1] if len(parts) == 2 else ""


def node(jid: str) -> str:
    """``user@host/res`` -> ``user`` ('' if none)."""
    b = bare(jid)
    return b.split("@", 1)[0] if "@" in b else ""


def domain(jid: str) -> str:
    b = bare(jid)
    return b.split("@", 1)[1] if "@" in b else b


def full(bare_jid: str, res: str) -> str:
    return f"{bare_jid}/{res}" if res else bare_jid


def is_valid(jid: str) -> bool:
    """A loose check good enough to catch typos before asking the daemon."""
    if not jid or any(c.isspace() for c in bare(jid)):
        return False
    b = bare(jid)
    if b.count("@") > 1:
        return False
    host = domain(b)
    return (
        bool(host)
        and not host.startswith(".")
        and not host.endswith(".")
        and ("@" not in b or bool(node(b)))
    )
