"""Questions the daemon asks the user (bridge signal ``ActionNew``), for any frontend.

The daemon sends ``ActionNew(profile, id, data, timeout, default)`` and takes the first
``ActionAnswer(profile, id, answer)``, or ``default`` after ``timeout`` seconds (then it emits
``ActionExpired(profile, id, default)``). ``data`` is an open record; a :class:`Question`
reads what frontends understand in it:

- the text: ``message``, ``question``, ``text`` or ``title`` (the first one given), with a
  ``title`` shown above it when both are there;
- ``type``: a hint (``subscription``, ``confirm``, ``yes_no``...), shown when there is no text;
- ``choices`` (or ``options``, ``answers``): the possible answers, strings or records
  ``{value, label}``; a ``confirm`` / ``yes_no`` question without them gets yes and no;
- ``form`` (or ``fields`` at the top level): a data form (see :mod:`.forms`), answered with
  the JSON object of its values (``{"var": value}``);
- otherwise the answer is free text (the default answer is offered).

A question is ``pending``, then ``answered`` (by this frontend), ``expired`` (the daemon took
the default: ``ActionExpired``, or its time ran out here) or ``gone`` (answered elsewhere, or
the daemon went away).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from sat_frontends.quick_frontend.forms import DataForm

__all__ = ["Question", "PENDING", "ANSWERED", "EXPIRED", "GONE"]

PENDING, ANSWERED, EXPIRED, GONE = "pending", "answered", "expired", "gone"

_TEXT_KEYS = ("message", "question", "text", "title")
_CHOICE_KEYS = ("choices", "options", "answers")
_TYPE_TEXT = {
    "subscription": "a presence subscription request",
    "subscribe": "a presence subscription request",
    "confirm": "a confirmation",
    "yes_no": "a confirmation",
    "file": "a file transfer",
}


@dataclass(eq=False)
class Question:
    profile: str
    id: str
    data: dict = field(default_factory=dict)
    #: seconds the daemon waits for an answer (from when the question was received)
    timeout: float = 0.0
    default: str = ""
    received: float = field(default_factory=time.monotonic)
    state: str = PENDING
    #: the answer given here, or the default the daemon took
    answer: str = ""

    def __post_init__(self) -> None:
        self.data = dict(self.data or {})
        record = self.data.get("form")
        if not isinstance(record, dict) and isinstance(self.data.get("fields"), list):
            record = self.data
        self.form: DataForm | None = (
            DataForm.from_record(record) if isinstance(record, dict) else None
        )

    # ------------------------------------------------------------------ what is asked

    @property
    def kind(self) -> str:
        return str(self.data.get("type") or "")

    @property
    def text(self) -> str:
        for key in _TEXT_KEYS:
            value = self.data.get(key)
            if value:
                return str(value)
        described = _TYPE_TEXT.get(self.kind)
        if described:
            who = self.data.get("from") or self.data.get("jid") or self.data.get("entity")
            return described + (f" from {who}" if who else "")
        return f"the daemon asks a question ({self.kind or 'no details'})"

    @property
    def title_only(self) -> bool:
        return not any(self.data.get(k) for k in _TEXT_KEYS if k != "title")

    @property
    def title(self) -> str:
        if self.title_only:
            return ""
        return str(self.data.get("title") or "")

    @property
    def choices(self) -> list[tuple[str, str]]:
        """(value, label) of the possible answers (empty: a form or free text)."""
        for key in _CHOICE_KEYS:
            raw = self.data.get(key)
            if isinstance(raw, list | tuple) and raw:
                out = []
                for item in raw:
                    if isinstance(item, dict):
                        value = str(item.get("value", ""))
                        out.append((value, str(item.get("label") or value)))
                    else:
                        out.append((str(item), str(item)))
                return out
        if self.form is None and self.kind in ("confirm", "yes_no"):
            return [("yes", "yes"), ("no", "no")]
        return []

    @property
    def free_text(self) -> bool:
        return self.form is None and not self.choices

    # ------------------------------------------------------------------ time

    @property
    def deadline(self) -> float:
        return self.received + self.timeout

    def remaining(self, now: float | None = None) -> float:
        if self.timeout <= 0:
            return 0.0
        return max(0.0, self.deadline - (time.monotonic() if now is None else now))

    @property
    def pending(self) -> bool:
        return self.state == PENDING

    def status_text(self) -> str:
        if self.state == ANSWERED:
            return f"answered: {self.answer}"
        if self.state == EXPIRED:
            return f"expired: the daemon took the default answer ({self.answer or 'none'})"
        if self.state == GONE:
            return "no longer asked (answered elsewhere, or the daemon went away)"
        left = int(self.remaining() + 0.5)
        default = f", then the default answer: {self.default}" if self.default else ""
        return f"{left} s to answer{default}"

    # ------------------------------------------------------------------ answering

    def form_answer(self, values: dict[str, Any]) -> str:
        """The answer to a form question: JSON of every field's (checked) value."""
        if self.form is None:
            raise ValueError("this question has no form")
        return json.dumps(self.form.complete(values), ensure_ascii=False, sort_keys=True)

    def label_of(self, answer: str) -> str:
        for value, label in self.choices:
            if value == answer:
                return label
        return answer
