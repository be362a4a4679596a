"""XEP-0245: The /me Command.

A message whose body starts with ``/me `` (the four characters, at the very
beginning, as the XEP defines it) is an action: ``data["extra"]["me"] = True``
on sent and received messages, so frontends show "* nick does something"
without parsing. The body itself is never changed (the XEP: the sending
client sends it as typed; interpretation is the receiver's business).
"""

from __future__ import annotations

from twisted.words.xish import domish

from sat.core.plugin import Plugin

ME_PREFIX = "/me "
#: after decryption and the id/time plugins; only reads the body
PRIORITY = 50


def is_me(body: str | None) -> bool:
    return isinstance(body, str) and body.startswith(ME_PREFIX) and len(body) > len(ME_PREFIX)


class MePlugin(Plugin):
    name = "XEP-0245"
    label = "The /me Command"
    xeps = ("XEP-0245",)
    description = "Flags /me action messages for frontends (extra.me)."

    def __init__(self, host):
        super().__init__(host)
        host.hooks.add("message_send", self._flag, PRIORITY)
        host.hooks.add("message_received", self._flag, PRIORITY)

    @staticmethod
    def _flag(client, elt: domish.Element, data: dict) -> None:
        if is_me(data.get("body")):
            data["extra"]["me"] = True


PLUGIN = MePlugin
