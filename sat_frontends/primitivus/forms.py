"""Data forms and the daemon's questions in Primitivus.

- :class:`FormWidget`: a data form (:class:`~sat_frontends.quick_frontend.forms.DataForm`) as
  a list of fields, each with the editor its type calls for: a line of text (masked for
  text-private), a check box (boolean), radio buttons (list-single), check boxes (list-multi),
  several lines (text-multi, jid-multi: one value a line); fixed fields are shown as text and
  hidden ones not at all. :meth:`FormWidget.values` gives what the editors hold, typed.
- :class:`FormWindow`: a window editing a form (``/config``): Ctrl+S or *Save* submits,
  Esc or *Cancel* closes without saving; what the daemon refuses is shown in the window, which
  stays open.
- :class:`QuestionWindow`: a question of the daemon (``ActionNew``): its text, the time left
  before the default answer is taken, and buttons for the choices (or a form, or a text line).
  It opens as a tab without taking the keys; when the daemon takes its default answer it is
  marked expired.

Tab and Shift+Tab move between fields, like the arrows (and Enter in a one-line field).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import urwid

from sat_frontends.primitivus.windows import Window
from sat_frontends.quick_frontend.forms import DataForm, FormError, FormField
from sat_frontends.quick_frontend.questions import Question

log = logging.getLogger(__name__)

__all__ = ["FormWidget", "FormWindow", "QuestionWindow", "LineEdit"]

#: width of the label column
LABEL_WIDTH = 26


class LineEdit(urwid.Edit):
    """An Edit with the readline keys of the input line (Ctrl+A/E/U/K/W...)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._command_map = urwid.command_map.copy()
        self._command_map.bind_readline()


def _button(label: str, callback, *args) -> urwid.Widget:
    return urwid.AttrMap(urwid.Button(label, callback, *args), "button", "button_focus")


class FieldEditor:
    """The editor widget of one field and the typed value it holds."""

    def __init__(self, field: FormField):
        self.field = field
        self.checkboxes: list[tuple[str, urwid.CheckBox]] = []
        self.radios: list[tuple[str, urwid.RadioButton]] = []
        self.edit: urwid.Edit | None = None
        self.checkbox: urwid.CheckBox | None = None
        self.widget = self._build()

    def _build(self) -> urwid.Widget:
        f = self.field
        value = f.value
        if f.type == "fixed":
            return urwid.Text(("info", "\n".join(f.values)))
        if f.type == "boolean":
            self.checkbox = urwid.CheckBox("", bool(value))
            return urwid.AttrMap(self.checkbox, None, "field_focus")
        if f.type == "list-single" and f.options:
            group: list[urwid.RadioButton] = []
            current = value if value in [v for v, _l in f.options] else None
            if current is None and not f.required:
                current = ""
                button = urwid.RadioButton(group, "(none)", state=True)
                self.radios.append(("", button))
            for option_value, label in f.options:
                button = urwid.RadioButton(group, label, state=option_value == current)
                self.radios.append((option_value, button))
            if not any(b.state for _v, b in self.radios) and self.radios:
                self.radios[0][1].set_state(True)
            return urwid.Pile([urwid.AttrMap(b, None, "field_focus") for _v, b in self.radios])
        if f.type == "list-multi" and f.options:
            chosen = set(value)
            for option_value, label in f.options:
                self.checkboxes.append(
                    (option_value, urwid.CheckBox(label, option_value in chosen))
                )
            return urwid.Pile([urwid.AttrMap(b, None, "field_focus") for _v, b in self.checkboxes])
        if f.type in ("text-multi", "jid-multi", "list-multi"):
            self.edit = LineEdit("", "\n".join(value), multiline=True)
        else:
            mask = "*" if f.type == "text-private" else None
            self.edit = LineEdit("", str(value), mask=mask)
        return urwid.AttrMap(self.edit, "field", "field_focus")

    @property
    def editable(self) -> bool:
        return self.field.editable

    def value(self) -> Any:
        if self.checkbox is not None:
            return self.checkbox.get_state()
        if self.radios:
            return next((v for v, b in self.radios if b.get_state()), "")
        if self.checkboxes:
            return [v for v, b in self.checkboxes if b.get_state()]
        if self.edit is not None:
            text = self.edit.edit_text
            if self.field.type in ("text-multi", "jid-multi", "list-multi"):
                return text.split("\n") if text else []
            return text
        return self.field.value

    def set_value(self, value: Any) -> None:
        """Put ``value`` in the editor (tests, scripted answers)."""
        if self.checkbox is not None:
            self.checkbox.set_state(bool(value))
        elif self.radios:
            for v, b in self.radios:
                if v == value:
                    b.set_state(True)
        elif self.checkboxes:
            chosen = set(value)
            for v, b in self.checkboxes:
                b.set_state(v in chosen)
        elif self.edit is not None:
            text = "\n".join(value) if isinstance(value, list) else str(value)
            self.edit.set_edit_text(text)
            self.edit.set_edit_pos(len(text))


class FormWidget(urwid.WidgetWrap):
    """A data form: one row per visible field (label, editor, description), scrollable."""

    def __init__(self, form: DataForm, footer: list[urwid.Widget] | None = None):
        self.form = form
        self.editors: dict[str, FieldEditor] = {}
        rows: list[urwid.Widget] = []
        for text in form.instructions:
            rows.append(urwid.Text(("info", text)))
        if form.instructions:
            rows.append(urwid.Divider())
        for field in form.fields:
            if not field.visible:
                continue
            editor = FieldEditor(field)
            if field.editable:
                self.editors[field.var] = editor
            if field.type == "fixed":
                rows.append(editor.widget)
                continue
            label = field.title + (" *" if field.required else "")
            row = urwid.Columns([(LABEL_WIDTH, urwid.Text(label)), editor.widget], dividechars=1)
            rows.append(row)
            if field.desc and field.desc != field.label:
                rows.append(urwid.Padding(urwid.Text(("time", field.desc)), left=LABEL_WIDTH + 1))
        self.field_rows = len(rows)
        rows.extend(footer or ())
        self.walker = urwid.SimpleFocusListWalker(rows)
        self.listbox = urwid.ListBox(self.walker)
        super().__init__(self.listbox)
        self.focus_first()

    def focus_first(self) -> None:
        for i, widget in enumerate(self.walker):
            if widget.selectable():
                self.walker.set_focus(i)
                return

    def editor(self, name: str) -> FieldEditor | None:
        field = self.form.get(name)
        return self.editors.get(field.var) if field is not None else None

    def values(self) -> dict[str, Any]:
        """var -> what its editor holds (typed: bool, str or list of str)."""
        return {var: editor.value() for var, editor in self.editors.items()}

    def keypress(self, size, key):
        if key == "tab":
            key = "down"
        elif key == "shift tab":
            key = "up"
        result = super().keypress(size, key)
        if result == "enter":
            # Enter in a one-line field: on to the next one
            result = super().keypress(size, "down")
            return None if result == "down" else result
        return result


class FormWindow(Window):
    """Edit a form in a window; ``on_submit(values)`` (a coroutine) saves it.

    ``on_submit`` returns a sentence for the user (told where the form came from) or raises
    an exception whose text is shown in the window (which then stays open).
    """

    kind = "form"

    def __init__(
        self,
        app,
        title: str,
        form: DataForm,
        on_submit: Callable[[dict], Awaitable[str | None]],
        conv=None,
        tab_title: str = "form",
    ):
        self.app = app
        self.form = form
        self.on_submit = on_submit
        self.conv_origin = conv
        self.tab_title = tab_title
        self.busy = False
        self.message = urwid.Text("")
        buttons = urwid.Columns(
            [
                (12, _button("Save", lambda _b: self.submit())),
                (12, _button("Cancel", lambda _b: self.cancel())),
            ],
            dividechars=2,
        )
        self.form_widget = FormWidget(form, [urwid.Divider(), buttons, self.message])
        header = urwid.Pile(
            [
                urwid.Text(("title", f" {form.title or title} "), wrap="ellipsis"),
                urwid.Text(
                    ("title_dim", " Ctrl+S: save · Esc: cancel · Tab: next field"),
                    wrap="ellipsis",
                ),
            ]
        )
        super().__init__(urwid.Frame(self.form_widget, header=urwid.AttrMap(header, "title")))

    @property
    def title(self) -> str:
        return self.tab_title

    def say(self, text: str, level: str = "info") -> None:
        attr = {"error": "error", "warning": "warning"}.get(level, "info")
        self.message.set_text((attr, text))
        self.app.request_redraw()

    def values(self) -> dict[str, Any]:
        return self.form_widget.values()

    def submit(self) -> None:
        if self.busy:
            return
        self.busy = True
        self.say("saving…")
        self.app.qa.spawn(self._submit(), "")

    async def _submit(self) -> None:
        try:
            result = await self.on_submit(self.values())
        except Exception as e:  # CommandError, FormError, bridge errors: said in the window
            message = getattr(e, "message", None) or str(e) or type(e).__name__
            self.say(message, "error")
            return
        finally:
            self.busy = False
        self.app.form_done(self, result or "")

    def cancel(self) -> None:
        self.app.form_done(self, None)

    def keypress(self, size, key):
        if key == "ctrl s":
            self.submit()
            return None
        return super().keypress(size, key)


class QuestionWindow(Window):
    """A question of the daemon, answered with a button, a form or a line of text."""

    kind = "question"

    def __init__(self, app, question: Question):
        self.app = app
        self.question = question
        self.status = urwid.Text("")
        self.message = urwid.Text("")
        self.form_widget: FormWidget | None = None
        self.answer_edit: LineEdit | None = None
        self.header = urwid.Text("", wrap="ellipsis")
        self._body = urwid.WidgetPlaceholder(self._build())
        self.sync()
        super().__init__(urwid.Frame(self._body, header=urwid.AttrMap(self.header, "title")))

    def _intro(self) -> list[urwid.Widget]:
        q = self.question
        rows: list[urwid.Widget] = []
        if q.title:
            rows.append(urwid.Text(("header", q.title)))
        rows.append(urwid.Text(q.text))
        if len(self.app.qa.sessions) > 1:
            rows.append(urwid.Text(("time", f"profile: {q.profile}")))
        rows.append(urwid.Divider())
        return rows

    def _build(self) -> urwid.Widget:
        q = self.question
        rows = self._intro()
        footer = [urwid.Divider(), self.status, self.message]
        if q.form is not None:
            buttons = urwid.Columns(
                [
                    (12, _button("Send", lambda _b: self.answer_form())),
                    (16, _button("Not now", lambda _b: self.app.close_window(self))),
                ],
                dividechars=2,
            )
            self.form_widget = FormWidget(q.form, [*footer[:1], buttons, *footer[1:]])
            return urwid.Pile([("pack", urwid.Pile(rows)), self.form_widget])
        if q.choices:
            for value, label in q.choices:
                text = label + (" (default)" if value == q.default else "")
                button = _button(text, lambda _b, v=value: self.answer(v))
                rows.append(urwid.Padding(button, width=urwid.calc_width(text, 0, len(text)) + 4))
        else:
            self.answer_edit = LineEdit("Answer: ", q.default)
            rows.append(urwid.AttrMap(self.answer_edit, "field", "field_focus"))
            rows.append(
                urwid.Columns(
                    [(12, _button("Send", lambda _b: self.answer(self.answer_edit.edit_text)))]
                )
            )
        rows.extend(footer)
        walker = urwid.SimpleFocusListWalker(rows)
        for i, widget in enumerate(walker):
            if widget.selectable():
                walker.set_focus(i)
                break
        return urwid.ListBox(walker)

    @property
    def title(self) -> str:
        return "?question" if self.question.pending else f"?{self.question.state}"

    @property
    def unread(self) -> int:
        return 1 if self.question.pending else 0

    @property
    def mention(self) -> bool:
        return self.question.pending

    def sync(self) -> None:
        q = self.question
        profile = f" {q.profile}" if len(self.app.qa.sessions) > 1 else ""
        self.header.set_text([("title", " Question from the daemon "), ("title_dim", profile)])
        attr = "warning" if q.pending else "info"
        self.status.set_text((attr, q.status_text()))

    def render(self, size, focus=False):
        self.sync()
        return super().render(size, focus)

    def answer(self, value: str) -> None:
        if not self.question.pending:
            self.message.set_text(("warning", "this question is no longer asked"))
            return
        self.app.answer_question(self.question, value)

    def answer_form(self) -> None:
        if self.form_widget is None:
            return
        try:
            value = self.question.form_answer(self.form_widget.values())
        except FormError as e:
            self.message.set_text(("error", str(e)))
            self.app.request_redraw()
            return
        self.answer(value)

    def done(self) -> None:
        """The question was answered, expired or dropped: no more answers from here."""
        q = self.question
        rows = self._intro()
        rows.append(urwid.Text(("warning" if q.state != "answered" else "info", q.status_text())))
        rows.append(urwid.Divider())
        rows.append(_button("Close", lambda _b: self.app.close_window(self)))
        walker = urwid.SimpleFocusListWalker(rows)
        walker.set_focus(len(rows) - 1)
        self._body.original_widget = urwid.ListBox(walker)
        self.sync()

    def keypress(self, size, key):
        if key == "tab":
            key = "down"
        elif key == "shift tab":
            key = "up"
        if key == "enter" and self.answer_edit is not None and self.question.pending:
            # Enter in the text line answers
            body = self._body.original_widget
            if isinstance(body, urwid.ListBox) and body.focus is not None:
                focused = body.focus
                if getattr(focused, "original_widget", None) is self.answer_edit:
                    self.answer(self.answer_edit.edit_text)
                    return None
        return super().keypress(size, key)
