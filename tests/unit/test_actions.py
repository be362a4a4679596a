"""Questions to the user never block the daemon."""

import pytest
from twisted.internet import task

from sat.bridge.contract import Bridge
from sat.core import errors
from sat.core.actions import Actions


class Host:
    def __init__(self):
        self.bridge = Bridge()
        self.bridge.add_signal(
            "ActionNew",
            (
                ("profile", "s", "p"),
                ("id", "s", "i"),
                ("data", "a{sv}", "d"),
                ("timeout", "d", "t"),
                ("default", "s", "f"),
            ),
            "asked",
        )
        self.bridge.add_signal(
            "ActionExpired", (("profile", "s", "p"), ("id", "s", "i"), ("default", "s", "f")), "x"
        )
        self.emitted = []

        class Listener:
            def bridge_signal(_, signal, args):
                self.emitted.append((signal.name, args))

            def bridge_changed(_, member):
                pass

        self.bridge.attach(Listener())


def test_answer_wins_before_timeout():
    clock = task.Clock()
    host = Host()
    actions = Actions(host, clock)
    d = actions.ask("alice", {"question": "accept file?"}, 30, "no")
    ((name, args),) = host.emitted
    assert name == "ActionNew" and args[0] == "alice" and args[4] == "no"
    action_id = args[1]
    assert [p["id"] for p in actions.pending("alice")] == [action_id]
    actions.answer("alice", action_id, "yes")
    assert d.result == "yes"
    clock.advance(60)
    assert d.result == "yes" and not actions.pending("alice")
    with pytest.raises(errors.NotFound):
        actions.answer("alice", action_id, "again")


def test_default_taken_when_nobody_answers():
    clock = task.Clock()
    host = Host()
    actions = Actions(host, clock)
    d = actions.ask("alice", {"question": "trust device?"}, 10, "no")
    clock.advance(9.9)
    assert not d.called
    clock.advance(0.2)
    assert d.result == "no"
    assert host.emitted[-1][0] == "ActionExpired"


def test_other_profile_cannot_answer():
    clock = task.Clock()
    host = Host()
    actions = Actions(host, clock)
    actions.ask("alice", {}, 10, "no")
    action_id = host.emitted[0][1][1]
    with pytest.raises(errors.NotFound):
        actions.answer("mallory", action_id, "yes")
