"""Plugin base class and the loader that orders plugins by dependency.

A plugin is a module in :mod:`sat.plugins` whose module-level ``PLUGIN``
names a :class:`Plugin` subclass. The class declares what it is (``name``,
``xeps``), what it needs (``dependencies``: loading fails without them) and
what it would like (``recommendations``: loaded first when present). The
loader imports every module, sorts them so dependencies come first, skips
those disabled in the config, and records every failure (import error,
missing dependency, exception in ``__init__``) in :attr:`PluginLoader.health`
so it can be read later over the bridge; a failed plugin takes its
dependents down with it *loudly*, each with its own reason.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from twisted.words.xish.xmlstream import XmlStream  # noqa: F401

log = logging.getLogger(__name__)


class Plugin:
    """Base of every plugin.

    Subclasses set the class attributes below and may override the hooks.
    ``host`` gives access to the registry (``host.plugins["XEP-0030"]``),
    config, storage and bridge.
    """

    #: registry key, e.g. "XEP-0030" or "MISC-ACCOUNT"
    name: str = ""
    #: human readable label
    label: str = ""
    #: XEPs implemented, e.g. ("XEP-0030",)
    xeps: tuple[str, ...] = ()
    #: plugins that must be loaded first; loading fails without them
    dependencies: tuple[str, ...] = ()
    #: plugins loaded first when available; loading goes on without them
    recommendations: tuple[str, ...] = ()
    #: short description shown in the health list
    description: str = ""

    def __init__(self, host):
        self.host = host

    def config(self, section: str, name: str, default):
        """The option ``[section] name`` (typed and checked by the configuration registry),
        or ``default`` when the host has no configuration (tests) or leaves it unset."""
        config = getattr(self.host, "config", None)
        if config is None:
            return default
        try:
            value = config.get(section, name)
        except Exception:
            return default
        return default if value is None else value

    async def resolve_profile(self, profile: str) -> str:
        """The profile a bridge call means (empty: the default one); ``profile`` as given
        when the host has no profile manager (tests)."""
        profiles = getattr(self.host, "profiles", None)
        return await profiles.resolve(profile) if profiles is not None else profile

    # --- per-profile hooks -------------------------------------------------

    def get_handler(self, client) -> Any | None:
        """Return a wokkel ``XMPPHandler`` to attach to this profile's stream, or None."""
        return None

    async def profile_connecting(self, client) -> None:
        """Called before the profile's stream is opened."""

    async def profile_connected(self, client) -> None:
        """Called once the stream is authenticated and bound (also after a fresh reconnection)."""

    def profile_disconnected(self, client) -> None:
        """Called when the profile is disconnected on purpose."""

    async def stop(self) -> None:
        """Called when the daemon stops."""


@dataclass
class PluginStatus:
    """What happened to one plugin module; part of the daemon's health report."""

    module: str
    name: str = ""
    loaded: bool = False
    disabled: bool = False
    error: str = ""
    xeps: tuple[str, ...] = ()
    dependencies: tuple[str, ...] = ()
    details: str = field(default="", repr=False)

    def as_dict(self) -> dict:
        return {
            "module": self.module,
            "name": self.name,
            "loaded": self.loaded,
            "disabled": self.disabled,
            "error": self.error,
            "xeps": list(self.xeps),
            "dependencies": list(self.dependencies),
        }


class PluginLoader:
    """Find, order and instantiate plugins."""

    def __init__(self, host, package: str = "sat.plugins", disabled: set[str] | None = None):
        self.host = host
        self.package = package
        self.disabled = {d.strip().lower() for d in (disabled or set()) if d.strip()}
        self.plugins: dict[str, Plugin] = {}
        self.health: dict[str, PluginStatus] = {}

    def _is_disabled(self, module_name: str, plugin_name: str) -> bool:
        short = module_name.rsplit(".", 1)[-1].lower()
        return short in self.disabled or plugin_name.lower() in self.disabled

    def discover(self) -> dict[str, type[Plugin]]:
        """Import every module of the package; return {plugin name: class}."""
        pkg = importlib.import_module(self.package)
        classes: dict[str, type[Plugin]] = {}
        for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
            if info.name.startswith("_"):
                continue
            mod_name = f"{self.package}.{info.name}"
            status = PluginStatus(module=mod_name)
            self.health[mod_name] = status
            try:
                module = importlib.import_module(mod_name)
                cls = module.PLUGIN
                if not (isinstance(cls, type) and issubclass(cls, Plugin) and cls.name):
                    raise TypeError("PLUGIN must be a Plugin subclass with a name")
            except Exception as e:
                status.error = f"import failed: {e.__class__.__name__}: {e}"
                status.details = traceback.format_exc()
                log.error(
                    "plugin module %s cannot be imported: %s\n%s", mod_name, e, status.details
                )
                continue
            status.name = cls.name
            status.xeps = tuple(cls.xeps)
            status.dependencies = tuple(cls.dependencies)
            if cls.name in classes:
                status.error = f"duplicate plugin name {cls.name!r}"
                log.error("plugin %s: %s", mod_name, status.error)
                continue
            if self._is_disabled(mod_name, cls.name):
                status.disabled = True
                log.info("plugin %s disabled by configuration", cls.name)
                continue
            classes[cls.name] = cls
        return classes

    @staticmethod
    def order(classes: dict[str, type[Plugin]]) -> tuple[list[str], dict[str, str]]:
        """Sort plugin names so dependencies (and available recommendations) come first.

        Returns (ordered names, {name: reason it cannot load}).
        """
        failed: dict[str, str] = {}
        ordered: list[str] = []
        state: dict[str, str] = {}  # name -> "visiting" | "done"

        def visit(name: str, chain: tuple[str, ...]) -> bool:
            if name in failed:
                return False
            if state.get(name) == "done":
                return True
            if state.get(name) == "visiting":
                failed[name] = "dependency cycle: " + " -> ".join(chain + (name,))
                return False
            state[name] = "visiting"
            cls = classes[name]
            for dep in cls.dependencies:
                if dep not in classes:
                    failed[name] = f"missing dependency {dep}"
                    break
                if not visit(dep, chain + (name,)):
                    failed.setdefault(name, f"dependency {dep} failed: {failed.get(dep, '?')}")
                    break
            else:
                for rec in cls.recommendations:
                    if rec in classes:
                        visit(rec, chain + (name,))
            state[name] = "done"
            if name in failed:
                return False
            ordered.append(name)
            return True

        for name in sorted(classes):
            visit(name, ())
        return ordered, failed

    def load_all(self) -> dict[str, Plugin]:
        """Discover, order and instantiate every enabled plugin."""
        classes = self.discover()
        by_name = {s.name: s for s in self.health.values() if s.name}
        ordered, failed = self.order(classes)
        for name, reason in failed.items():
            by_name[name].error = reason
            log.error("plugin %s not loaded: %s", name, reason)
        for name in ordered:
            status = by_name[name]
            missing = [d for d in classes[name].dependencies if d not in self.plugins]
            if missing:
                status.error = f"dependency failed to start: {', '.join(missing)}"
                log.error("plugin %s not loaded: %s", name, status.error)
                continue
            try:
                self.plugins[name] = classes[name](self.host)
            except Exception as e:
                status.error = f"init failed: {e.__class__.__name__}: {e}"
                status.details = traceback.format_exc()
                log.error("plugin %s failed to start: %s\n%s", name, e, status.details)
                continue
            status.loaded = True
            log.debug("plugin %s loaded", name)
        return self.plugins

    def health_report(self) -> list[dict]:
        return [s.as_dict() for s in sorted(self.health.values(), key=lambda s: s.module)]
