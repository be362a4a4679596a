"""Plugin discovery, dependency order, disabling and loud failures."""

import sys
import textwrap

import pytest

from sat.core.plugin import PluginLoader


@pytest.fixture
def plugin_pkg(tmp_path, monkeypatch):
    """Create a throw-away plugin package; returns a function adding modules to it."""
    name = f"fakeplugins_{tmp_path.name.replace('-', '_')}"
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))

    def add(module, body):
        (pkg / f"{module}.py").write_text(textwrap.dedent(body))

    yield name, add
    for mod in [m for m in sys.modules if m.startswith(name)]:
        del sys.modules[mod]


def plugin(cls, name, deps=(), recs=(), extra=""):
    return f"""
from sat.core.plugin import Plugin
class {cls}(Plugin):
    name = {name!r}
    dependencies = {tuple(deps)!r}
    recommendations = {tuple(recs)!r}
{textwrap.indent(textwrap.dedent(extra), "    ")}
PLUGIN = {cls}
"""


def test_dependency_order_and_recommendations(plugin_pkg):
    pkg, add = plugin_pkg
    add("a_muc", plugin("Muc", "XEP-0045", deps=["XEP-0030"], recs=["XEP-0359"]))
    add("b_disco", plugin("Disco", "XEP-0030"))
    add("c_ids", plugin("Ids", "XEP-0359", deps=["XEP-0030"]))
    loader = PluginLoader(host=object(), package=pkg)
    plugins = loader.load_all()
    order = list(plugins)
    assert order.index("XEP-0030") < order.index("XEP-0359") < order.index("XEP-0045")
    assert all(s.loaded for s in loader.health.values())


def test_failures_are_reported_with_dependents(plugin_pkg):
    pkg, add = plugin_pkg
    add("a_broken", "import does_not_exist_anywhere\n")
    add(
        "b_base",
        plugin("Base", "BASE", extra="def __init__(self, host):\n    raise RuntimeError('boom')"),
    )
    add("c_child", plugin("Child", "CHILD", deps=["BASE"]))
    add("d_orphan", plugin("Orphan", "ORPHAN", deps=["MISSING"]))
    add("e_ok", plugin("Ok", "OK"))
    loader = PluginLoader(host=object(), package=pkg)
    plugins = loader.load_all()
    assert list(plugins) == ["OK"]
    report = {r["module"].rsplit(".", 1)[-1]: r for r in loader.health_report()}
    assert "ModuleNotFoundError" in report["a_broken"]["error"]
    assert "boom" in report["b_base"]["error"]
    assert "BASE" in report["c_child"]["error"]
    assert "missing dependency MISSING" in report["d_orphan"]["error"]
    assert report["e_ok"]["loaded"] and not report["e_ok"]["error"]


def test_disabled_by_config_and_cycles(plugin_pkg):
    pkg, add = plugin_pkg
    add("a_one", plugin("One", "ONE", deps=["TWO"]))
    add("b_two", plugin("Two", "TWO", deps=["ONE"]))
    add("c_off", plugin("Off", "OFF"))
    loader = PluginLoader(host=object(), package=pkg, disabled={"c_off"})
    plugins = loader.load_all()
    assert plugins == {}
    report = {r["name"]: r for r in loader.health_report()}
    assert report["OFF"]["disabled"] and not report["OFF"]["loaded"]
    assert "cycle" in report["ONE"]["error"] or "cycle" in report["TWO"]["error"]
