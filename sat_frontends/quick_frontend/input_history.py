"""Input line history: Up/Down through what was typed, keeping the line being written."""

from __future__ import annotations

__all__ = ["InputHistory"]


class InputHistory:
    def __init__(self, size: int = 500):
        self.size = size
        self.entries: list[str] = []
        #: position while browsing (len(entries) = the draft)
        self._index = 0
        self._draft = ""

    def add(self, text: str) -> None:
        if text.strip() and (not self.entries or self.entries[-1] != text):
            self.entries.append(text)
            del self.entries[: -self.size]
        self._index = len(self.entries)
        self._draft = ""

    @property
    def browsing(self) -> bool:
        return self._index < len(self.entries)

    def previous(self, current: str) -> str | None:
        """The entry before; None at the oldest. ``current`` is kept as the draft."""
        if self._index == 0:
            return None
        if self._index == len(self.entries):
            self._draft = current
        self._index -= 1
        return self.entries[self._index]

    def next(self) -> str | None:
        """The entry after (the draft at the end); None if not browsing."""
        if self._index >= len(self.entries):
            return None
        self._index += 1
        if self._index == len(self.entries):
            return self._draft
        return self.entries[self._index]

    def reset(self) -> None:
        self._index = len(self.entries)
        self._draft = ""
