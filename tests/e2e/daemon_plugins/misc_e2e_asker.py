"""A daemon plugin for the end-to-end tests only: ``E2eAsk`` makes the daemon ask a question.

No plugin of the daemon asks the user anything yet (``host.actions.ask``); the tests run the
real daemon with this one added (see ``tests/e2e/asker_daemon.py``) so that a real
``ActionNew`` reaches Primitivus and its answer goes through the real ``ActionAnswer``.
"""

from __future__ import annotations

from sat.core.plugin import Plugin


class E2eAskerPlugin(Plugin):
    name = "MISC-E2E-ASKER"
    label = "End-to-end test questions"
    description = "E2eAsk: ask the user a question through host.actions (tests only)"

    def __init__(self, host):
        super().__init__(host)
        bridge = getattr(host, "bridge", None)
        if bridge is None:
            return
        bridge.add_method(
            "E2eAsk",
            self._ask,
            args=(
                ("profile", "s", "profile asked"),
                ("data", "a{sv}", "what is asked (ActionNew data)"),
                ("timeout", "d", "seconds before the default answer is taken"),
                ("default", "s", "answer used when nobody answers"),
            ),
            out=("s", "the answer given, or the default"),
            doc="Ask the user a question with ActionNew and wait for the answer (tests only)",
            interface="plugin",
        )

    async def _ask(self, profile, data, timeout, default):
        profile = await self.resolve_profile(profile)
        return await self.host.actions.ask(profile, dict(data), float(timeout), default)


PLUGIN = E2eAskerPlugin
