"""Tab completion for text input: commands, nicks, JIDs; repeated Tab cycles.

:meth:`Completer.complete` takes the text and the cursor position and returns the new text
and cursor. A completion "session" lasts while Tab is pressed again on the text it produced;
any other edit starts a new one (:meth:`Completer.reset`).

Candidates come from a provider: ``provider(kind) -> list[str]`` where ``kind`` is
``"command"``, ``"nick"`` (occupants of the room, or the contact of a 1:1 chat), ``"jid"``
(contacts of the profile), ``"room"`` (joined rooms) or ``"profile"``. The command being
typed says which kind its first argument takes (``arg_kinds``).
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Completer"]

#: text added after a nick completed at the start of the line (IRC habit)
NICK_SUFFIX = ": "


class Completer:
    def __init__(
        self,
        provider: Callable[[str], list[str]],
        arg_kinds: dict[str, str] | None = None,
    ):
        self.provider = provider
        #: command name (without /) -> kind of its first argument
        self.arg_kinds = arg_kinds or {}
        self._state: tuple | None = None

    def reset(self) -> None:
        self._state = None

    def _candidates(self, text: str, start: int, word: str) -> tuple[list[str], str]:
        """(matching candidates, suffix to add)."""
        before = text[:start]
        if start == 0 and word.startswith("/"):
            names = [f"/{n}" for n in self.provider("command")]
            return _match(names, word), " "
        if before.startswith("/") and before.count(" ") == 1 and before.endswith(" "):
            command = before[1:].strip().lower()
            kind = self.arg_kinds.get(command)
            if kind:
                return _match(self.provider(kind), word), " "
        suffix = NICK_SUFFIX if not before.strip() else " "
        return _match(self.provider("nick"), word), suffix

    def complete(self, text: str, cursor: int) -> tuple[str, int]:
        state = self._state
        if state is not None and state[0] == (text, cursor):
            _key, before, after, candidates, index, suffix = state
            index = (index + 1) % len(candidates)
        else:
            start = cursor
            while start > 0 and not text[start - 1].isspace():
                start -= 1
            word = text[start:cursor]
            candidates, suffix = self._candidates(text, start, word)
            if not candidates:
                self._state = None
                return text, cursor
            before, after, index = text[:start], text[cursor:], 0
        chosen = candidates[index] + suffix
        if after.startswith(suffix.strip() or "\0") or (after[:1] == " " and suffix == " "):
            chosen = candidates[index]
        new_text = before + chosen + after
        new_cursor = len(before) + len(chosen)
        self._state = ((new_text, new_cursor), before, after, candidates, index, suffix)
        return new_text, new_cursor


def _match(names: list[str], word: str) -> list[str]:
    folded = word.casefold()
    seen: set[str] = set()
    out = []
    for name in names:
        if name not in seen and name.casefold().startswith(folded):
            seen.add(name)
            out.append(name)
    return out
