"""Daemon configuration: typed options declared in one registry, read from INI files.

Sources, each overriding the previous ones:

1. ``/etc/sat/sat.conf`` (system wide),
2. ``$XDG_CONFIG_HOME/sat/sat.conf`` (``~/.config/sat/sat.conf`` by default),
3. a file named by the caller (the daemon's ``--config`` option),
4. environment variables ``SAT_<SECTION>_<OPTION>`` (e.g. ``SAT_XMPP_CA_FILE``).

Every option is declared once, with its type, default and documentation, by
:func:`register_option`; the core options are declared at the end of this
module and plugins declare theirs (one section per plugin) when imported.
Values are checked when the configuration is loaded (and, for options a plugin
registers later, by :meth:`Config.validate`); a bad value raises
:class:`~sat.core.errors.ConfigError` naming where it came from, e.g.
``/home/u/.config/sat/sat.conf [xmpp] connect_timeout: expected a number, got 'abc'``.

``python -m sat.memory.config`` prints the documentation of every option as
Markdown; ``doc/configuration.md`` is generated from it.
"""

from __future__ import annotations

import configparser
import difflib
import logging
import math
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sat.core.errors import ConfigError

log = logging.getLogger(__name__)

CONFIG_FILE_NAME = "sat.conf"
DEFAULT_SYSTEM_DIR = "/etc/sat"
ENV_PREFIX = "SAT_"

#: option types; see :func:`parse_value`
TYPES = ("str", "int", "float", "bool", "path", "list", "choice")
_PY_TYPES = {str: "str", int: "int", float: "float", bool: "bool", list: "list", Path: "path"}

_TRUE = frozenset(("yes", "true", "1", "on"))
_FALSE = frozenset(("no", "false", "0", "off"))
_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
# configparser treats [DEFAULT] as values inherited by every section; we don't want that
# (it would make every option of it "unknown" in every section), so it is a plain section here
_NO_DEFAULT_SECTION = "\x00sat-no-default-section"


# --- XDG base directories ----------------------------------------------------


def home_dir(env: Mapping[str, str] | None = None) -> Path:
    """The user's home directory (``$HOME`` of ``env``, else the password database)."""
    env = os.environ if env is None else env
    home = env.get("HOME")
    return Path(home) if home else Path.home()


def _xdg_dir(env: Mapping[str, str] | None, var: str) -> Path | None:
    env = os.environ if env is None else env
    value = env.get(var, "")
    # the XDG spec says relative paths in these variables are invalid and must be ignored
    if value and os.path.isabs(value):
        return Path(value)
    return None


def xdg_config_home(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME``, or ``~/.config``."""
    return _xdg_dir(env, "XDG_CONFIG_HOME") or home_dir(env) / ".config"


def xdg_data_home(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_DATA_HOME``, or ``~/.local/share``."""
    return _xdg_dir(env, "XDG_DATA_HOME") or home_dir(env) / ".local" / "share"


def xdg_runtime_dir(env: Mapping[str, str] | None = None) -> Path | None:
    """``$XDG_RUNTIME_DIR``, or None when it is not set (it has no fallback)."""
    return _xdg_dir(env, "XDG_RUNTIME_DIR")


def user_config_dir(env: Mapping[str, str] | None = None) -> Path:
    """Directory of the user's ``sat.conf``: ``$XDG_CONFIG_HOME/sat``."""
    return xdg_config_home(env) / "sat"


# --- option declarations -----------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One typed configuration option.

    ``default`` is the typed value used when no source sets the option (None
    means "unset": an empty path, for instance). ``compute``, when given, is
    called with the :class:`Config` to produce the value whenever it is None
    (unset or set empty), for defaults that depend on the environment or on
    other options; ``default_doc`` then says in words what it gives.
    """

    section: str
    name: str
    type: str
    default: Any
    doc: str
    choices: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    default_doc: str | None = None
    compute: Callable[[Config], Any] | None = field(default=None, compare=False, repr=False)
    #: module that declared the option (used to tell core options from plugin ones)
    owner: str = field(default="", compare=False)

    def __post_init__(self):
        set_ = object.__setattr__
        type_ = _PY_TYPES.get(self.type, self.type)  # accept str, int... as well as "str", "int"
        set_(self, "type", type_)
        where = f"option [{self.section}] {self.name}"
        if not (isinstance(self.section, str) and _NAME_RE.match(self.section)):
            raise ValueError(f"{where}: invalid section name (lower case, digits, '_' or '-')")
        if not (isinstance(self.name, str) and _NAME_RE.match(self.name)):
            raise ValueError(f"{where}: invalid option name (lower case, digits, '_' or '-')")
        if type_ not in TYPES:
            raise ValueError(f"{where}: unknown type {type_!r} (one of {', '.join(TYPES)})")
        if not (self.doc and self.doc.strip()):
            raise ValueError(f"{where}: every option must be documented")
        set_(self, "doc", " ".join(self.doc.split()))
        if type_ == "choice":
            choices = tuple(str(c).lower() for c in self.choices)
            if not choices:
                raise ValueError(f"{where}: a choice option needs its allowed values")
            set_(self, "choices", choices)
        elif self.choices:
            raise ValueError(f"{where}: only choice options take choices")
        if (self.min is not None or self.max is not None) and type_ not in ("int", "float"):
            raise ValueError(f"{where}: min/max only apply to int and float options")
        if type_ == "list":
            default = () if self.default is None else self.default
            if isinstance(default, str):
                default = _parse_list(default)
            set_(self, "default", tuple(str(d) for d in default))
        elif type_ == "path" and isinstance(self.default, Path):
            set_(self, "default", str(self.default))
        if self.default is not None:
            try:
                _check_default(self)
            except ValueError as e:
                raise ValueError(f"{where}: invalid default {self.default!r}: {e}") from None

    @property
    def key(self) -> tuple[str, str]:
        return (self.section, self.name)

    @property
    def env_var(self) -> str:
        """Name of the environment variable overriding this option."""
        return ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", f"{self.section}_{self.name}".upper())

    def describe_type(self) -> str:
        """Human description of the accepted values, for documentation."""
        if self.type == "choice":
            return "one of " + ", ".join(f"`{c}`" for c in self.choices)
        if self.type in ("int", "float"):
            desc = "integer" if self.type == "int" else "number"
            bounds = []
            if self.min is not None:
                bounds.append(f">= {_fmt_number(self.min)}")
            if self.max is not None:
                bounds.append(f"<= {_fmt_number(self.max)}")
            return f"{desc} ({', '.join(bounds)})" if bounds else desc
        return {
            "str": "string",
            "bool": "boolean (`yes`/`no`, `true`/`false`, `on`/`off`, `1`/`0`)",
            "path": "path (`~` expanded; relative to the file's directory)",
            "list": "comma separated list",
        }[self.type]

    def describe_default(self) -> str:
        """The default as documentation shows it."""
        if self.default_doc is not None:
            return self.default_doc
        return "`" + format_value(self.default) + "`" if _not_empty(self.default) else "empty"


def _not_empty(value: Any) -> bool:
    return value is not None and value != "" and value != ()


def _fmt_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def format_value(value: Any) -> str:
    """Write a typed value back the way it would be written in ``sat.conf``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return _fmt_number(value)
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def _check_default(option: Option) -> None:
    value = option.default
    if option.type == "path":
        if not isinstance(value, str):
            raise ValueError("expected a path string")
        return
    if option.type == "list":
        return
    if option.type == "bool" and not isinstance(value, bool):
        raise ValueError("expected a bool")
    if option.type == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError("expected an int")
    if option.type == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("expected a float")
        object.__setattr__(option, "default", float(value))
    if option.type in ("str", "choice") and not isinstance(value, str):
        raise ValueError("expected a str")
    # run the parser on its text form: checks choices and bounds with the same rules as files
    parse_value(option, format_value(option.default))


class OptionRegistry:
    """All declared options, by (section, name), in declaration order."""

    def __init__(self):
        self._options: dict[tuple[str, str], Option] = {}
        self._env_vars: dict[str, Option] = {}
        self._section_docs: dict[str, str] = {}
        self._lock = threading.Lock()

    def register(self, option: Option) -> Option:
        """Declare ``option``.

        Declaring the same option again with the same definition is a no-op (a
        module imported twice); with a different definition it is a
        :class:`ConfigError`.
        """
        with self._lock:
            existing = self._options.get(option.key)
            if existing is not None:
                if existing == option:
                    return existing
                raise ConfigError(
                    f"option [{option.section}] {option.name} is already declared "
                    f"(by {existing.owner or '?'}) with a different definition"
                )
            clash = self._env_vars.get(option.env_var)
            if clash is not None:
                raise ConfigError(
                    f"options [{clash.section}] {clash.name} and [{option.section}] "
                    f"{option.name} would share the environment variable {option.env_var}"
                )
            self._options[option.key] = option
            self._env_vars[option.env_var] = option
            return option

    def register_section(self, section: str, doc: str) -> None:
        """Give ``section`` a description for the documentation."""
        with self._lock:
            doc = " ".join(doc.split())
            if self._section_docs.get(section, doc) != doc:
                raise ConfigError(f"section [{section}] is already described differently")
            self._section_docs[section] = doc

    def get(self, section: str, name: str) -> Option | None:
        return self._options.get((section.lower(), name.lower()))

    def section_doc(self, section: str) -> str:
        return self._section_docs.get(section, "")

    def sections(self) -> list[str]:
        """Sections having at least one option, in declaration order."""
        return list(dict.fromkeys(section for section, _ in self._options))

    def options(self, section: str | None = None) -> list[Option]:
        return [o for o in self._options.values() if section is None or o.section == section]

    def copy(self) -> OptionRegistry:
        new = OptionRegistry()
        new._options = dict(self._options)
        new._env_vars = dict(self._env_vars)
        new._section_docs = dict(self._section_docs)
        return new

    def __contains__(self, key: tuple[str, str]) -> bool:
        return (key[0].lower(), key[1].lower()) in self._options

    def __iter__(self) -> Iterator[Option]:
        return iter(list(self._options.values()))

    def __len__(self) -> int:
        return len(self._options)


#: the process-wide registry: core options and those of every imported plugin
REGISTRY = OptionRegistry()


def _caller_module(depth: int = 2) -> str:
    try:
        return sys._getframe(depth).f_globals.get("__name__", "")
    except ValueError:  # pragma: no cover - shallow stack
        return ""


def register_option(
    section: str,
    name: str,
    type: str | type,
    default: Any,
    doc: str,
    *,
    choices: tuple[str, ...] | list[str] = (),
    min: float | None = None,
    max: float | None = None,
    default_doc: str | None = None,
    compute: Callable[[Config], Any] | None = None,
    registry: OptionRegistry | None = None,
) -> Option:
    """Declare an option (typically at a plugin module's import) and return it.

    ``type`` is one of :data:`TYPES` (``"str"``, ``"int"``, ``"float"``,
    ``"bool"``, ``"path"``, ``"list"``, ``"choice"``) or the matching Python
    type. A plugin uses its own section, e.g.
    ``register_option("xep_0045", "history_size", "int", 20, "...", min=0)``.
    """
    option = Option(
        section=section,
        name=name,
        type=type,
        default=default,
        doc=doc,
        choices=tuple(choices),
        min=min,
        max=max,
        default_doc=default_doc,
        compute=compute,
        owner=_caller_module(),
    )
    return (REGISTRY if registry is None else registry).register(option)


def register_section(section: str, doc: str, *, registry: OptionRegistry | None = None) -> None:
    """Describe a section in the generated documentation."""
    (REGISTRY if registry is None else registry).register_section(section, doc)


# --- parsing -----------------------------------------------------------------


def _parse_list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _expand_user(raw: str, env: Mapping[str, str] | None) -> str:
    if raw == "~" or raw.startswith("~/"):
        return str(home_dir(env)) + raw[1:]
    return os.path.expanduser(raw)  # ~user/...


def parse_value(
    option: Option,
    raw: str,
    base_dir: Path | str | None = None,
    env: Mapping[str, str] | None = None,
) -> Any:
    """Turn the text ``raw`` into ``option``'s type.

    Raises ``ValueError`` whose message says what was expected, e.g.
    ``expected a number, got 'abc'``. Relative paths are resolved against
    ``base_dir`` (the directory of the file the value comes from), or the
    current directory when it is None. An empty path gives None.
    """
    text = raw.strip()
    got = f"got {raw!r}"
    kind = option.type
    if kind == "str":
        return raw
    if kind == "bool":
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError(f"expected a boolean (yes/no, true/false, on/off, 1/0), {got}")
    if kind in ("int", "float"):
        try:
            if kind == "int":
                value: float = int(text, 10)
            else:
                value = float(text)
                if not math.isfinite(value):
                    raise ValueError
        except ValueError:
            expected = "an integer" if kind == "int" else "a number"
            raise ValueError(f"expected {expected}, {got}") from None
        if (option.min is not None and value < option.min) or (
            option.max is not None and value > option.max
        ):
            raise ValueError(f"expected {option.describe_type()}, {got}")
        return value
    if kind == "choice":
        lowered = text.lower()
        if lowered not in option.choices:
            raise ValueError(f"expected one of {', '.join(option.choices)}, {got}")
        return lowered
    if kind == "list":
        return list(_parse_list(raw))
    if kind == "path":
        if not text:
            return None
        expanded = Path(_expand_user(text, env))
        if not expanded.is_absolute():
            expanded = Path(base_dir if base_dir is not None else os.getcwd()) / expanded
        return Path(os.path.normpath(expanded))
    raise AssertionError(kind)  # pragma: no cover - Option checks the type


# --- the configuration -------------------------------------------------------


@dataclass(frozen=True)
class RawValue:
    """A value as written in one source."""

    text: str
    #: where it comes from: a file path, ``$SAT_...`` or ``<dict>``
    origin: str
    #: directory relative paths are resolved against (None: current directory)
    base_dir: Path | None = None


class Config:
    """The loaded configuration. Build it with :meth:`load` (or :meth:`from_dict` in tests)."""

    def __init__(
        self, registry: OptionRegistry | None = None, env: Mapping[str, str] | None = None
    ):
        self.registry = REGISTRY if registry is None else registry
        #: environment the config was loaded with (env overrides, XDG and HOME come from it)
        self.env: dict[str, str] = dict(os.environ if env is None else env)
        #: files read, in the order they were read (later ones override earlier ones)
        self.sources: list[Path] = []
        # (section, option) -> value of the last file setting it; sections/options lower case
        self._raw: dict[tuple[str, str], RawValue] = {}
        self._values: dict[tuple[str, str], Any] = {}
        self._origins: dict[tuple[str, str], str] = {}
        self._resolving: set[tuple[str, str]] = set()
        self._reported_unknown: set[tuple[str, str]] = set()
        self._lock = threading.RLock()

    # construction

    @classmethod
    def load(
        cls,
        extra_file: str | os.PathLike | None = None,
        env: Mapping[str, str] | None = None,
        system_dir: str | os.PathLike | None = DEFAULT_SYSTEM_DIR,
        user_dir: str | os.PathLike | None = None,
        registry: OptionRegistry | None = None,
    ) -> Config:
        """Read every source and check every declared option.

        ``env`` defaults to ``os.environ``; ``user_dir`` to
        ``$XDG_CONFIG_HOME/sat``; ``system_dir=None`` skips the system file.
        Missing system/user files are skipped; a missing ``extra_file`` (asked
        for explicitly) is an error.
        """
        config = cls(registry, env)
        if system_dir is not None:
            config._read_file(Path(system_dir) / CONFIG_FILE_NAME, required=False)
        user = Path(user_dir) if user_dir is not None else user_config_dir(config.env)
        config._read_file(user / CONFIG_FILE_NAME, required=False)
        if extra_file is not None:
            config._read_file(Path(extra_file), required=True)
        config.validate()
        return config

    @classmethod
    def from_dict(
        cls,
        values: Mapping[str, Mapping[str, Any]] | None = None,
        env: Mapping[str, str] | None = None,
        registry: OptionRegistry | None = None,
    ) -> Config:
        """A configuration made of ``values`` (``{section: {option: value}}``) and ``env``.

        Values may be typed (``True``, ``5``, ``["a", "b"]``) or text as in a
        file. ``env`` defaults to an empty environment, so tests don't depend
        on the caller's variables.
        """
        config = cls(registry, {} if env is None else env)
        for section, options in (values or {}).items():
            for name, value in options.items():
                text = value if isinstance(value, str) else format_value(value)
                config._raw[(section.lower(), name.lower())] = RawValue(text, "<dict>")
        config.validate()
        return config

    def _read_file(self, path: Path, required: bool) -> None:
        path = Path(os.path.abspath(path))
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            if required:
                raise ConfigError(f"{path}: configuration file not found") from None
            log.debug("no configuration file at %s", path)
            return
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
        except OSError as e:
            raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
        parser = configparser.ConfigParser(
            interpolation=None, default_section=_NO_DEFAULT_SECTION, strict=True
        )
        try:
            parser.read_string(text, source=str(path))
        except configparser.Error as e:
            message = " ".join(str(e).split())
            raise ConfigError(f"{path}: invalid INI syntax: {message}") from None
        for section in parser.sections():
            for name, value in parser.items(section, raw=True):
                self._raw[(section.lower(), name.lower())] = RawValue(value, str(path), path.parent)
        self.sources.append(path)
        log.debug("configuration read from %s", path)

    # reading values

    def _raw_value(self, option: Option) -> RawValue | None:
        var = option.env_var
        if var in self.env:
            return RawValue(self.env[var], "$" + var)
        return self._raw.get(option.key)

    def _resolve(self, option: Option) -> Any:
        key = option.key
        raw = self._raw_value(option)
        if raw is None:
            origin = "default"
            value = option.default
            if option.type == "path" and value is not None:
                value = parse_value(option, value, None, self.env)
            elif option.type == "list":
                value = list(value)
        else:
            origin = raw.origin
            try:
                value = parse_value(option, raw.text, raw.base_dir, self.env)
            except ValueError as e:
                raise ConfigError(
                    f"{raw.origin} [{option.section}] {option.name}: {e}",
                    section=option.section,
                    option=option.name,
                    origin=raw.origin,
                ) from None
        if value is None and option.compute is not None:
            if key in self._resolving:
                raise ConfigError(f"[{option.section}] {option.name}: circular default")
            self._resolving.add(key)
            try:
                value = option.compute(self)
            finally:
                self._resolving.discard(key)
            origin = "default" if raw is None else f"{origin} (empty: default)"
        self._values[key] = value
        self._origins[key] = origin
        return value

    def get(self, section: str, name: str) -> Any:
        """The typed value of option ``name`` of ``section``.

        Lists come back as a new ``list``; paths as :class:`~pathlib.Path` (or
        None when unset). Asking for an undeclared option is a ``KeyError``.
        """
        option = self.registry.get(section, name)
        if option is None:
            raise KeyError(f"undeclared configuration option [{section}] {name}")
        with self._lock:
            if option.key in self._values:
                value = self._values[option.key]
            else:
                value = self._resolve(option)
        return list(value) if isinstance(value, list) else value

    def section(self, section: str) -> dict[str, Any]:
        """Typed values of every declared option of ``section``."""
        return {o.name: self.get(o.section, o.name) for o in self.registry.options(section.lower())}

    def origin(self, section: str, name: str) -> str:
        """Where the value of an option comes from: a file, ``$SAT_...`` or ``default``."""
        self.get(section, name)
        return self._origins[(section.lower(), name.lower())]

    def is_set(self, section: str, name: str) -> bool:
        """Whether a file or the environment sets the option (as opposed to its default)."""
        option = self.registry.get(section, name)
        if option is None:
            raise KeyError(f"undeclared configuration option [{section}] {name}")
        return self._raw_value(option) is not None

    # checking

    def validate(self) -> None:
        """Check every declared option, reporting all bad values in one :class:`ConfigError`.

        :meth:`load` calls it; call it again once plugins are imported so the
        options they declared are checked too (and unknown options of their
        sections reported).
        """
        errors: list[str] = []
        with self._lock:
            for option in self.registry:
                if option.key in self._values:
                    continue
                try:
                    self._resolve(option)
                except ConfigError as e:
                    errors.append(e.message)
        if not errors:
            errors.extend(self._cross_check())
        self._report_unknown()
        if errors:
            raise ConfigError("\n".join(errors), errors=errors)

    def _cross_check(self) -> list[str]:
        errors = []
        if ("bridge", "bus") in self.registry and self.get("bridge", "bus") == "address":
            if ("bridge", "bus_address") in self.registry and not self.get(
                "bridge", "bus_address"
            ).strip():
                errors.append(
                    f"{self.origin('bridge', 'bus')} [bridge] bus_address: "
                    "required when bus = address"
                )
        return errors

    def _report_unknown(self) -> None:
        known_sections = set(self.registry.sections())
        for key, raw in self._raw.items():
            if key in self._reported_unknown or key in self.registry:
                continue
            section, name = key
            if section in known_sections:
                names = [o.name for o in self.registry.options(section)]
                close = difflib.get_close_matches(name, names, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                log.warning(
                    "%s [%s] %s: unknown option, ignored%s", raw.origin, section, name, hint
                )
                self._reported_unknown.add(key)
            elif (section, "") not in self._reported_unknown:
                # may belong to a plugin that is absent or not imported yet
                log.debug("%s [%s]: unknown section, ignored for now", raw.origin, section)
                self._reported_unknown.add((section, ""))

    def __repr__(self) -> str:
        sources = ", ".join(str(s) for s in self.sources) or "defaults"
        return f"<Config from {sources}>"


# --- documentation -----------------------------------------------------------

_DOC_HEADER = """\
# Configuration

<!-- Generated by `python -m sat.memory.config > doc/configuration.md`.
     Do not edit: change the option declarations in sat/memory/config.py
     (or in the plugin declaring them) and generate it again. Core sections
     come first, then those of the plugins (sat/plugins/xep_*.py). -->

The daemon reads INI files, each overriding the values of the previous ones:

1. `/etc/sat/sat.conf`, for the whole system;
2. `$XDG_CONFIG_HOME/sat/sat.conf` (`~/.config/sat/sat.conf` when `XDG_CONFIG_HOME` is unset);
3. the file given with the daemon's `--config` option;
4. then environment variables `SAT_<SECTION>_<OPTION>`, in upper case, override
   everything: `SAT_XMPP_CA_FILE=/etc/ssl/my-ca.pem`.

Missing files are skipped, except the one given with `--config`. Values are
written as is (no `%(name)s` interpolation). Booleans accept `yes`/`no`,
`true`/`false`, `on`/`off`, `1`/`0`; lists are comma separated; in paths `~`
is the home directory and a relative path is relative to the directory of the
file it is written in (to the current directory in an environment variable).
Every value is checked when the daemon starts: a wrong one stops it with a
message naming the file, the section and the option. Unknown options of a
known section are reported in the log and ignored; unknown sections (e.g. of a
plugin that is not installed) are ignored.

Plugins declare their options in a section of their own.

Example:

```ini
[core]
log_level = debug
plugins_disabled = xep_0045_muc

[xmpp]
ca_file = ~/certs/my-ca.pem
connect_timeout = 20
```
"""


def render_markdown(registry: OptionRegistry | None = None, core_only: bool = True) -> str:
    """Markdown documentation of the declared options.

    With ``core_only`` (the default, used for ``doc/configuration.md``), only
    the options declared by this module are listed, so the result does not
    depend on which plugins happen to be imported.
    """
    registry = REGISTRY if registry is None else registry
    options = [o for o in registry if not core_only or o.owner == __name__]
    lines = [_DOC_HEADER]
    for section in dict.fromkeys(o.section for o in options):
        lines.append(f"## `[{section}]`\n")
        if doc := registry.section_doc(section):
            lines.append(doc + "\n")
        for option in (o for o in options if o.section == section):
            lines.append(f"### `{option.name}`\n")
            lines.append(f"- type: {option.describe_type()}")
            lines.append(f"- default: {option.describe_default()}")
            lines.append(f"- environment variable: `{option.env_var}`\n")
            lines.append(option.doc + "\n")
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m sat.memory.config [--core-only]``: print the options' documentation."""
    import argparse
    import importlib
    import pkgutil

    parser = argparse.ArgumentParser(
        prog="python -m sat.memory.config",
        description="Print the documentation of every configuration option as Markdown.",
    )
    parser.add_argument(
        "--core-only",
        action="store_true",
        help="only the core's options (by default every plugin module is imported and the "
        "options they declare are documented too, after the core's)",
    )
    args = parser.parse_args(argv)
    if not args.core_only:
        import sat.plugins

        for info in pkgutil.iter_modules(sat.plugins.__path__):
            if info.name.startswith("_"):
                continue
            try:
                importlib.import_module(f"sat.plugins.{info.name}")
            except Exception as e:  # an absent optional dependency: document the others
                print(f"cannot import sat.plugins.{info.name}: {e}", file=sys.stderr)
    sys.stdout.write(render_markdown(core_only=args.core_only))
    return 0


# --- core options --------------------------------------------------------------


def _default_data_dir(config: Config) -> Path:
    return xdg_data_home(config.env) / "sat"


def _default_pid_file(config: Config) -> Path:
    runtime = xdg_runtime_dir(config.env)
    if runtime is not None:
        return runtime / "sat" / "sat.pid"
    return config.get("core", "data_dir") / "sat.pid"


def _default_storage_path(config: Config) -> Path:
    return config.get("core", "data_dir") / "sat.db"


register_section("core", "The daemon itself: where it keeps its data, what it logs and loads.")
register_option(
    "core",
    "data_dir",
    "path",
    None,
    "Directory where the daemon keeps its data (database, caches, downloaded files).",
    default_doc="`$XDG_DATA_HOME/sat` (`~/.local/share/sat` when `XDG_DATA_HOME` is unset)",
    compute=_default_data_dir,
)
register_option(
    "core",
    "log_level",
    "choice",
    "info",
    "Least important log messages written.",
    choices=("debug", "info", "warning", "error"),
)
register_option(
    "core",
    "log_file",
    "path",
    None,
    "File the daemon writes its log to; empty writes it to standard error.",
)
register_option(
    "core",
    "plugins_disabled",
    "list",
    (),
    "Plugins not to load, by module (`xep_0045_muc`) or plugin name (`XEP-0045`). "
    "Plugins depending on a disabled one are not loaded either.",
)
register_option(
    "core",
    "default_profile",
    "str",
    "",
    "Profile used when a frontend names none; empty: no default profile.",
)
register_option(
    "core",
    "autoconnect",
    "bool",
    True,
    "Connect, when the daemon starts, the profiles marked to connect automatically; "
    "`no` starts with every profile offline.",
)
register_option(
    "core",
    "pid_file",
    "path",
    None,
    "File where the daemon writes its process id.",
    default_doc="`$XDG_RUNTIME_DIR/sat/sat.pid`, or `<data_dir>/sat.pid` when "
    "`XDG_RUNTIME_DIR` is unset",
    compute=_default_pid_file,
)

register_section("bridge", "The D-Bus bridge frontends talk to the daemon through.")
register_option(
    "bridge",
    "bus",
    "choice",
    "session",
    "D-Bus bus the bridge is offered on: `session` (the user's session bus, for a daemon "
    "run by a desktop user), `system` (the system bus, for a daemon run as a system "
    "service; see `system_group`) or `address` (the bus at `bus_address`).",
    choices=("session", "system", "address"),
)
register_option(
    "bridge",
    "bus_address",
    "str",
    "",
    "D-Bus address of the bus to use when `bus = address`, e.g. `unix:path=/run/sat/bus`; "
    "required in that mode, ignored otherwise.",
)
register_option(
    "bridge",
    "system_group",
    "str",
    "sat",
    "With `bus = system`: Unix group whose members may use the bridge; the system bus "
    "policy for `org.salutatoi.SAT` grants access to this group. Add the users of the "
    "frontends to it.",
)

register_section("xmpp", "Connections to XMPP servers (for every profile).")
register_option(
    "xmpp",
    "ca_file",
    "path",
    None,
    "PEM file of the certificate authorities trusted to verify the servers' TLS "
    "certificates; empty uses the system trust store.",
)
register_option(
    "xmpp",
    "connect_timeout",
    "float",
    10.0,
    "Seconds allowed to reach the server and open the stream before the attempt fails.",
    min=0.1,
)
register_option(
    "xmpp",
    "reconnect_initial_delay",
    "float",
    0.5,
    "Seconds before the first attempt to reconnect after a connection is lost; the delay "
    "grows after each failed attempt, up to `reconnect_max_delay`.",
    min=0,
)
register_option(
    "xmpp",
    "reconnect_max_delay",
    "float",
    60.0,
    "Longest delay, in seconds, between two reconnection attempts.",
    min=0,
)
register_option(
    "xmpp",
    "keepalive_interval",
    "float",
    60.0,
    "Seconds without traffic after which the server is pinged (XEP-0199) to detect a dead "
    "connection; 0 disables the pings.",
    min=0,
)
register_option(
    "xmpp",
    "stream_management",
    "bool",
    True,
    "Use stream management (XEP-0198) when the server offers it: stanzas lost with a "
    "connection are sent again and a dropped session can be resumed.",
)
register_option(
    "xmpp",
    "resource",
    "str",
    "sat",
    "Resource asked for when binding (the `resource` of `user@server/resource`); the "
    "server may change it. Empty lets the server choose.",
)

register_section("storage", "The SQLite database (history, cache, parameters).")
register_option(
    "storage",
    "path",
    "path",
    None,
    "SQLite database file.",
    default_doc="`<data_dir>/sat.db`",
    compute=_default_storage_path,
)


if __name__ == "__main__":
    # run the imported module's main, not this __main__ copy: plugins register their
    # options in sat.memory.config's registry
    from sat.memory import config as _config

    sys.exit(_config.main())
