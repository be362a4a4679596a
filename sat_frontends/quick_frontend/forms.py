"""Data forms (XEP-0004) as the daemon sends them over the bridge, for any frontend.

The daemon gives a form as a record (``MucConfigGet``, a question of ``ActionNew``)::

    {"type": "form", "form_type": "...", "title": "...", "instructions": ["..."],
     "fields": [{"var", "type", "label", "desc", "required", "values": [str],
                 "options": [{"value", "label"}]}]}

:class:`DataForm` reads it; each :class:`FormField` knows its current value in a type fit for
an editor (``bool`` for a boolean, ``list[str]`` for list-multi / jid-multi / text-multi, else
``str``). :meth:`DataForm.changes` turns what the user typed into the values to send back
(only the fields that changed, typed for the bridge), after checking them: a required field
left empty or a value not among a list's options raises :class:`FormError` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["DataForm", "FormError", "FormField", "MULTI_TYPES", "TEXT_TYPES"]

#: fields holding several values
MULTI_TYPES = ("list-multi", "jid-multi", "text-multi")
#: fields edited as one line of text
TEXT_TYPES = ("text-single", "text-private", "jid-single")

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


class FormError(ValueError):
    """A value the form does not accept; the text names the field."""


@dataclass
class FormField:
    var: str
    type: str = "text-single"
    label: str = ""
    desc: str = ""
    required: bool = False
    values: list[str] = field(default_factory=list)
    #: (value, label) of list-single / list-multi
    options: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def from_record(cls, record: dict) -> FormField:
        options = []
        for option in record.get("options") or ():
            if isinstance(option, dict):
                value = str(option.get("value", ""))
                options.append((value, str(option.get("label") or value)))
            else:
                options.append((str(option), str(option)))
        values = record.get("values")
        if values is None:
            values = [record["value"]] if "value" in record else []
        if isinstance(values, str):
            values = [values]
        return cls(
            var=str(record.get("var", "")),
            type=str(record.get("type") or "text-single"),
            label=str(record.get("label") or ""),
            desc=str(record.get("desc") or ""),
            required=bool(record.get("required", False)),
            values=[_text(v) for v in values],
            options=options,
        )

    @property
    def title(self) -> str:
        """What the user sees as the field's name."""
        return self.label or self.var

    @property
    def editable(self) -> bool:
        return self.type not in ("hidden", "fixed") and bool(self.var)

    @property
    def visible(self) -> bool:
        return self.type != "hidden"

    @property
    def value(self) -> Any:
        """The current value, typed for an editor."""
        if self.type == "boolean":
            return bool(self.values) and self.values[0].strip().lower() in _TRUE
        if self.type in MULTI_TYPES:
            return list(self.values)
        return self.values[0] if self.values else ""

    def option_label(self, value: str) -> str:
        for option_value, label in self.options:
            if option_value == value:
                return label
        return value

    def display(self) -> str:
        """The current value as one line of text."""
        value = self.value
        if self.type == "boolean":
            return "yes" if value else "no"
        if self.type == "text-private":
            return "*" * len(value) if value else ""
        if self.type in ("list-single", "list-multi"):
            shown = [self.option_label(v) for v in (value if isinstance(value, list) else [value])]
            return ", ".join(s for s in shown if s)
        if isinstance(value, list):
            return " / ".join(value)
        return value

    def parse(self, text: str) -> Any:
        """A value typed as text (``/config var value``), converted for this field."""
        if self.type == "boolean":
            lowered = text.strip().lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise FormError(f"{self.title}: yes or no, not {text!r}")
        if self.type == "text-multi":
            return text.split("\n") if text else []
        if self.type in ("list-multi", "jid-multi"):
            parts = [p.strip() for p in text.replace(",", " ").split()]
            return self.normalise([p for p in parts if p])
        if self.type == "list-single" and self.options:
            return self.normalise(text.strip())
        return text

    def normalise(self, value: Any) -> Any:
        """``value`` checked and converted to this field's type (FormError if it cannot be)."""
        if self.type == "boolean":
            if isinstance(value, str):
                return self.parse(value)
            return bool(value)
        if self.type in MULTI_TYPES:
            if isinstance(value, str):
                value = value.split("\n") if self.type == "text-multi" else value.split()
            values = [_text(v) for v in value]
            if self.type == "text-multi":
                while values and not values[-1]:
                    values.pop()
            else:
                values = [v for v in values if v]
            if self.type == "list-multi" and self.options:
                known = {v for v, _label in self.options}
                labels = {label.casefold(): v for v, label in self.options}
                fixed = []
                for v in values:
                    if v not in known and v.casefold() in labels:
                        v = labels[v.casefold()]
                    if v not in known:
                        raise FormError(f"{self.title}: {v!r} is not one of the choices")
                    fixed.append(v)
                values = fixed
            return values
        if isinstance(value, list | tuple):
            value = value[0] if value else ""
        value = _text(value)
        if self.type == "list-single" and self.options and value:
            known = [v for v, _label in self.options]
            if value not in known:
                labels = {label.casefold(): v for v, label in self.options}
                if value.casefold() in labels:
                    return labels[value.casefold()]
                choices = ", ".join(v for v in known)
                raise FormError(f"{self.title}: {value!r} is not one of {choices}")
        return value

    def is_empty(self, value: Any) -> bool:
        if self.type == "boolean":
            return False
        if isinstance(value, list):
            return not any(v for v in value)
        return not str(value).strip()


@dataclass
class DataForm:
    fields: list[FormField] = field(default_factory=list)
    title: str = ""
    instructions: list[str] = field(default_factory=list)
    type: str = "form"
    form_type: str = ""

    @classmethod
    def from_record(cls, record: dict) -> DataForm:
        instructions = record.get("instructions") or []
        if isinstance(instructions, str):
            instructions = [instructions]
        return cls(
            fields=[FormField.from_record(f) for f in record.get("fields") or () if f],
            title=str(record.get("title") or ""),
            instructions=[str(i) for i in instructions],
            type=str(record.get("type") or "form"),
            form_type=str(record.get("form_type") or ""),
        )

    def get(self, name: str) -> FormField | None:
        """A field by var, else by label (case-insensitive), else by the end of its var
        (``roomname`` finds ``muc#roomconfig_roomname``)."""
        for f in self.fields:
            if f.var == name:
                return f
        lowered = name.casefold()
        for f in self.fields:
            if f.editable and f.label.casefold() == lowered:
                return f
        found = [
            f
            for f in self.fields
            if f.editable
            and (f.var.casefold().endswith("_" + lowered) or f.var.casefold().endswith(lowered))
        ]
        return found[0] if len(found) == 1 else None

    def editable_fields(self) -> list[FormField]:
        return [f for f in self.fields if f.editable]

    def changes(self, values: dict[str, Any]) -> dict[str, Any]:
        """The values that differ from the form's, checked and typed for the bridge.

        ``values`` maps field vars to what the editors hold; unknown vars raise FormError.
        """
        by_var = {f.var: f for f in self.fields if f.var}
        out: dict[str, Any] = {}
        for var, raw in values.items():
            f = by_var.get(var)
            if f is None:
                raise FormError(f"the form has no field {var!r}")
            if not f.editable:
                continue
            value = f.normalise(raw)
            if f.required and f.is_empty(value):
                raise FormError(f"{f.title} is required")
            if value != f.normalise(f.value):
                out[var] = value
        return out

    def complete(self, values: dict[str, Any]) -> dict[str, Any]:
        """Every editable field's value (the form's own where ``values`` has none), checked."""
        out: dict[str, Any] = {}
        for f in self.editable_fields():
            value = f.normalise(values[f.var] if f.var in values else f.value)
            if f.required and f.is_empty(value):
                raise FormError(f"{f.title} is required")
            out[f.var] = value
        return out


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return "" if value is None else str(value)
