"""Configuration: sources and precedence, typed parsing, errors, registry, docs."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sat.core.errors import ConfigError
from sat.memory import config as cfg
from sat.memory.config import Config, Option, register_option

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def dirs(tmp_path):
    """Separate system, user and extra directories plus a fake HOME."""
    d = {name: tmp_path / name for name in ("system", "user", "extra", "home")}
    for path in d.values():
        path.mkdir()
    d["env"] = {"HOME": str(d["home"])}
    return d


def write(directory: Path, text: str, name: str = "sat.conf") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def load(dirs, extra: Path | None = None, env: dict | None = None, **kwargs) -> Config:
    return Config.load(
        extra_file=extra,
        env={**dirs["env"], **(env or {})},
        system_dir=dirs["system"],
        user_dir=dirs["user"],
        **kwargs,
    )


@pytest.fixture
def registry():
    """A private registry with the core options, for tests that register their own."""
    return cfg.REGISTRY.copy()


# --- defaults ------------------------------------------------------------------


def test_defaults(dirs):
    config = load(dirs)
    home = dirs["home"]
    assert config.sources == []
    assert config.get("core", "data_dir") == home / ".local/share/sat"
    assert config.get("core", "log_level") == "info"
    assert config.get("core", "log_file") is None
    assert config.get("core", "plugins_disabled") == []
    assert config.get("core", "default_profile") == ""
    assert config.get("core", "autoconnect") is True
    assert config.get("core", "pid_file") == home / ".local/share/sat/sat.pid"
    assert config.get("bridge", "bus") == "session"
    assert config.get("bridge", "bus_address") == ""
    assert config.get("bridge", "system_group") == "sat"
    assert config.get("xmpp", "ca_file") is None
    assert config.get("xmpp", "connect_timeout") == 10.0
    assert config.get("xmpp", "reconnect_initial_delay") == 0.5
    assert config.get("xmpp", "reconnect_max_delay") == 60.0
    assert config.get("xmpp", "keepalive_interval") == 60.0
    assert config.get("xmpp", "stream_management") is True
    assert config.get("xmpp", "resource") == "sat"
    assert config.get("storage", "path") == home / ".local/share/sat/sat.db"
    assert config.origin("xmpp", "connect_timeout") == "default"


def test_xdg_defaults(dirs, tmp_path):
    env = {"XDG_DATA_HOME": str(tmp_path / "data"), "XDG_RUNTIME_DIR": str(tmp_path / "run")}
    config = load(dirs, env=env)
    assert config.get("core", "data_dir") == tmp_path / "data/sat"
    assert config.get("core", "pid_file") == tmp_path / "run/sat/sat.pid"
    assert config.get("storage", "path") == tmp_path / "data/sat/sat.db"


def test_relative_xdg_variables_are_ignored(dirs):
    config = load(dirs, env={"XDG_DATA_HOME": "relative/data"})
    assert config.get("core", "data_dir") == dirs["home"] / ".local/share/sat"


def test_user_dir_defaults_to_xdg_config_home(dirs, tmp_path):
    xdg = tmp_path / "xdgconf"
    (xdg / "sat").mkdir(parents=True)
    path = write(xdg / "sat", "[core]\nlog_level = debug\n")
    config = Config.load(
        env={**dirs["env"], "XDG_CONFIG_HOME": str(xdg)}, system_dir=dirs["system"]
    )
    assert config.sources == [path]
    assert config.get("core", "log_level") == "debug"


def test_storage_path_follows_data_dir(dirs):
    write(dirs["user"], "[core]\ndata_dir = /srv/sat\n")
    config = load(dirs)
    assert config.get("storage", "path") == Path("/srv/sat/sat.db")
    assert config.get("core", "pid_file") == Path("/srv/sat/sat.pid")


def test_empty_path_means_computed_default(dirs):
    write(dirs["user"], "[storage]\npath =\n[core]\ndata_dir = /srv/sat\n")
    assert load(dirs).get("storage", "path") == Path("/srv/sat/sat.db")


# --- precedence ----------------------------------------------------------------


def test_precedence_system_user_extra_env(dirs):
    system = write(
        dirs["system"],
        "[xmpp]\nconnect_timeout = 1\nresource = sys\nkeepalive_interval = 11\n"
        "reconnect_max_delay = 12\n",
    )
    user = write(
        dirs["user"], "[xmpp]\nconnect_timeout = 2\nresource = usr\nkeepalive_interval = 21\n"
    )
    extra = write(dirs["extra"], "[xmpp]\nconnect_timeout = 3\nresource = xtr\n", "my.conf")
    config = load(dirs, extra=extra, env={"SAT_XMPP_CONNECT_TIMEOUT": "4"})
    assert config.sources == [system, user, extra]
    assert config.get("xmpp", "connect_timeout") == 4.0
    assert config.origin("xmpp", "connect_timeout") == "$SAT_XMPP_CONNECT_TIMEOUT"
    assert config.get("xmpp", "resource") == "xtr"
    assert config.origin("xmpp", "resource") == str(extra)
    assert config.get("xmpp", "keepalive_interval") == 21.0
    assert config.origin("xmpp", "keepalive_interval") == str(user)
    assert config.get("xmpp", "reconnect_max_delay") == 12.0
    assert config.origin("xmpp", "reconnect_max_delay") == str(system)
    assert config.is_set("xmpp", "resource")
    assert not config.is_set("xmpp", "stream_management")


def test_env_override_names(dirs):
    env = {
        "SAT_XMPP_CA_FILE": "/etc/ssl/ca.pem",
        "SAT_CORE_PLUGINS_DISABLED": "xep_0045_muc, XEP-0277",
        "SAT_CORE_AUTOCONNECT": "off",
    }
    config = load(dirs, env=env)
    assert config.get("xmpp", "ca_file") == Path("/etc/ssl/ca.pem")
    assert config.get("core", "plugins_disabled") == ["xep_0045_muc", "XEP-0277"]
    assert config.get("core", "autoconnect") is False


def test_env_empty_value_overrides_file(dirs):
    write(dirs["user"], "[xmpp]\nca_file = /etc/ssl/ca.pem\n")
    assert load(dirs, env={"SAT_XMPP_CA_FILE": ""}).get("xmpp", "ca_file") is None


def test_missing_extra_file_is_an_error(dirs):
    with pytest.raises(ConfigError, match="configuration file not found") as info:
        load(dirs, extra=dirs["extra"] / "nope.conf")
    assert str(dirs["extra"] / "nope.conf") in info.value.message


def test_system_dir_none_skips_system_file(dirs):
    write(dirs["system"], "[core]\nlog_level = debug\n")
    config = Config.load(env=dirs["env"], system_dir=None, user_dir=dirs["user"])
    assert config.sources == []
    assert config.get("core", "log_level") == "info"


def test_no_interpolation(dirs):
    write(dirs["user"], "[bridge]\nbus_address = unix:path=/run/%(user)s/bus\n")
    assert load(dirs).get("bridge", "bus_address") == "unix:path=/run/%(user)s/bus"


def test_default_section_is_not_inherited(dirs, caplog):
    write(dirs["user"], "[DEFAULT]\nlog_level = debug\n[xmpp]\nresource = r\n")
    with caplog.at_level(logging.WARNING, logger="sat.memory.config"):
        config = load(dirs)
    assert config.get("core", "log_level") == "info"
    assert not caplog.records


def test_option_names_are_case_insensitive(dirs):
    write(dirs["user"], "[XMPP]\nConnect_Timeout = 7\n")
    assert load(dirs).get("xmpp", "connect_timeout") == 7.0


# --- typed parsing ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("yes", True),
        ("no", False),
        ("true", True),
        ("False", False),
        ("1", True),
        ("0", False),
        ("on", True),
        ("OFF", False),
    ],
)
def test_bool_parsing(dirs, text, expected):
    write(dirs["user"], f"[xmpp]\nstream_management = {text}\n")
    assert load(dirs).get("xmpp", "stream_management") is expected


def test_list_parsing(dirs):
    write(dirs["user"], "[core]\nplugins_disabled = xep_0045_muc ,  ,misc_account,\n")
    config = load(dirs)
    assert config.get("core", "plugins_disabled") == ["xep_0045_muc", "misc_account"]
    # callers get a copy: mutating it does not change the configuration
    config.get("core", "plugins_disabled").append("x")
    assert config.get("core", "plugins_disabled") == ["xep_0045_muc", "misc_account"]


def test_path_parsing(dirs):
    user_file = write(
        dirs["user"],
        "[xmpp]\nca_file = ~/certs/ca.pem\n[core]\nlog_file = logs/sat.log\ndata_dir = /abs/x/../y\n",
    )
    config = load(dirs)
    assert config.get("xmpp", "ca_file") == dirs["home"] / "certs/ca.pem"
    # relative to the directory of the file it is written in
    assert config.get("core", "log_file") == user_file.parent / "logs/sat.log"
    assert config.get("core", "data_dir") == Path("/abs/y")


def test_relative_path_in_env_is_relative_to_cwd(dirs):
    config = load(dirs, env={"SAT_CORE_LOG_FILE": "sat.log"})
    assert config.get("core", "log_file") == Path(os.getcwd()) / "sat.log"


def test_choice_is_case_insensitive(dirs):
    write(dirs["user"], "[core]\nlog_level = WARNING\n")
    assert load(dirs).get("core", "log_level") == "warning"


def test_bad_number_names_file_section_option(dirs):
    path = write(dirs["user"], "[xmpp]\nconnect_timeout = abc\n")
    with pytest.raises(ConfigError) as info:
        load(dirs)
    assert info.value.message == f"{path} [xmpp] connect_timeout: expected a number, got 'abc'"
    assert info.value.details["errors"] == [info.value.message]


@pytest.mark.parametrize(
    "section, text, expected",
    [
        ("xmpp", "stream_management = maybe", "stream_management: expected a boolean"),
        ("core", "log_level = verbose", "log_level: expected one of debug, info, warning, error"),
        ("xmpp", "connect_timeout = 0", "connect_timeout: expected number (>= 0.1), got '0'"),
        ("xmpp", "keepalive_interval = -1", "keepalive_interval: expected number (>= 0)"),
        ("xmpp", "reconnect_max_delay = nan", "reconnect_max_delay: expected a number"),
        ("bridge", "bus = tcp", "bus: expected one of session, system, address, got 'tcp'"),
    ],
)
def test_bad_values(dirs, section, text, expected):
    path = write(dirs["user"], f"[{section}]\n{text}\n")
    with pytest.raises(ConfigError) as info:
        load(dirs)
    assert info.value.message.startswith(f"{path} [{section}] {expected}")


def test_bad_env_value_names_the_variable(dirs):
    with pytest.raises(ConfigError) as info:
        load(dirs, env={"SAT_XMPP_CONNECT_TIMEOUT": "soon"})
    assert info.value.message == (
        "$SAT_XMPP_CONNECT_TIMEOUT [xmpp] connect_timeout: expected a number, got 'soon'"
    )


def test_every_bad_value_is_reported(dirs):
    write(dirs["user"], "[xmpp]\nconnect_timeout = x\nstream_management = y\n")
    with pytest.raises(ConfigError) as info:
        load(dirs)
    assert len(info.value.details["errors"]) == 2
    assert "connect_timeout" in info.value.message and "stream_management" in info.value.message


def test_later_good_value_hides_earlier_bad_one(dirs):
    write(dirs["system"], "[xmpp]\nconnect_timeout = abc\n")
    write(dirs["user"], "[xmpp]\nconnect_timeout = 5\n")
    assert load(dirs).get("xmpp", "connect_timeout") == 5.0


def test_bus_address_required_in_address_mode(dirs):
    path = write(dirs["user"], "[bridge]\nbus = address\n")
    with pytest.raises(ConfigError, match=r"\[bridge\] bus_address: required") as info:
        load(dirs)
    assert str(path) in info.value.message
    write(dirs["user"], "[bridge]\nbus = address\nbus_address = unix:path=/tmp/bus\n")
    assert load(dirs).get("bridge", "bus_address") == "unix:path=/tmp/bus"


def test_invalid_ini_syntax(dirs):
    path = write(dirs["user"], "[xmpp]\nresource = a\nresource = b\n")
    with pytest.raises(ConfigError, match="invalid INI syntax") as info:
        load(dirs)
    assert str(path) in info.value.message
    write(dirs["user"], "no section header\n")
    with pytest.raises(ConfigError, match="invalid INI syntax"):
        load(dirs)


def test_not_utf8(dirs):
    (dirs["user"] / "sat.conf").write_bytes(b"[xmpp]\nresource = \xff\n")
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load(dirs)


# --- unknown options and sections ------------------------------------------------


def test_unknown_option_warns(dirs, caplog):
    path = write(dirs["user"], "[xmpp]\nconect_timeout = 5\n")
    with caplog.at_level(logging.DEBUG, logger="sat.memory.config"):
        load(dirs)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert f"{path} [xmpp] conect_timeout: unknown option" in message
    assert "did you mean connect_timeout?" in message


def test_unknown_section_is_debug_only(dirs, caplog):
    write(dirs["user"], "[some_absent_plugin]\nfoo = bar\n")
    with caplog.at_level(logging.DEBUG, logger="sat.memory.config"):
        load(dirs)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("unknown section" in r.getMessage() for r in caplog.records)


def test_undeclared_option_get_is_keyerror(dirs):
    with pytest.raises(KeyError):
        load(dirs).get("xmpp", "nope")


# --- registry ------------------------------------------------------------------


def test_plugin_option_registered_after_load(dirs, registry, caplog):
    path = write(dirs["user"], "[my_plugin]\nhistory_size = 30\ncolour = blue\n")
    config = load(dirs, registry=registry)
    register_option(
        "my_plugin", "history_size", "int", 20, "Messages kept.", min=0, registry=registry
    )
    register_option("my_plugin", "enabled", bool, True, "On or off.", registry=registry)
    assert config.get("my_plugin", "history_size") == 30
    assert config.get("my_plugin", "enabled") is True
    with caplog.at_level(logging.WARNING, logger="sat.memory.config"):
        config.validate()
    assert any(
        f"{path} [my_plugin] colour: unknown option" in r.getMessage() for r in caplog.records
    )


def test_plugin_option_bad_value_found_by_validate(dirs, registry):
    path = write(dirs["user"], "[my_plugin]\nhistory_size = -3\n")
    config = load(dirs, registry=registry)
    register_option(
        "my_plugin", "history_size", "int", 20, "Messages kept.", min=0, registry=registry
    )
    with pytest.raises(ConfigError) as info:
        config.validate()
    assert info.value.message == (
        f"{path} [my_plugin] history_size: expected integer (>= 0), got '-3'"
    )


def test_plugin_option_env_override(dirs, registry):
    register_option("my_plugin", "limit", "int", 1, "A limit.", max=10, registry=registry)
    config = load(dirs, registry=registry, env={"SAT_MY_PLUGIN_LIMIT": "9"})
    assert config.get("my_plugin", "limit") == 9


def test_register_twice(registry):
    first = register_option("p", "x", "int", 1, "Doc.", registry=registry)
    assert register_option("p", "x", "int", 1, "Doc.", registry=registry) is first
    with pytest.raises(ConfigError, match=r"\[p\] x is already declared"):
        register_option("p", "x", "int", 2, "Doc.", registry=registry)
    with pytest.raises(ConfigError, match="already declared"):
        register_option("p", "x", "str", "1", "Doc.", registry=registry)


def test_register_env_clash(registry):
    register_option("a_b", "c", "str", "", "Doc.", registry=registry)
    with pytest.raises(ConfigError, match="SAT_A_B_C"):
        register_option("a", "b_c", "str", "", "Doc.", registry=registry)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"type": "number"}, "unknown type"),
        ({"doc": " "}, "must be documented"),
        ({"type": "choice", "default": "a"}, "needs its allowed values"),
        ({"type": "choice", "default": "c", "choices": ("a", "b")}, "invalid default"),
        ({"type": "int", "default": 5, "min": 10}, "invalid default"),
        ({"type": "int", "default": "5"}, "invalid default"),
        ({"type": "str", "default": "", "min": 1}, "min/max only apply"),
        ({"section": "Bad Section"}, "invalid section name"),
    ],
)
def test_option_definition_errors(kwargs, message):
    definition = {"section": "p", "name": "x", "type": "int", "default": 1, "doc": "Doc."}
    with pytest.raises(ValueError, match=message):
        Option(**{**definition, **kwargs})


def test_from_dict():
    config = Config.from_dict(
        {"xmpp": {"connect_timeout": 2, "stream_management": False}, "core": {"data_dir": "/d"}}
    )
    assert config.get("xmpp", "connect_timeout") == 2.0
    assert config.get("xmpp", "stream_management") is False
    assert config.get("storage", "path") == Path("/d/sat.db")
    with pytest.raises(ConfigError, match=r"<dict> \[xmpp\] connect_timeout: expected a number"):
        Config.from_dict({"xmpp": {"connect_timeout": "later"}})


def test_section_values(dirs):
    xmpp = load(dirs).section("xmpp")
    assert set(xmpp) == {
        "ca_file",
        "connect_timeout",
        "reconnect_initial_delay",
        "reconnect_max_delay",
        "keepalive_interval",
        "stream_management",
        "resource",
    }


def test_core_options_documented():
    for option in cfg.REGISTRY:
        if option.owner == cfg.__name__:
            assert len(option.doc) > 10, option


# --- documentation -------------------------------------------------------------


def test_doc_file_covers_core_and_plugin_options():
    # generated in a fresh interpreter (test_module_main_prints_doc): here, check its content
    doc = (ROOT / "doc/configuration.md").read_text(encoding="utf-8")
    assert doc.startswith(cfg.render_markdown().rstrip("\n"))  # the core's part, first
    for section in ("xep_0030", "xep_0045", "xep_0313"):
        assert f"## `[{section}]`" in doc, section
    import sat.plugins.xep_0045_muc  # noqa: F401  (declares [xep_0045] options)

    for option in cfg.REGISTRY:
        if option.owner == "sat.plugins.xep_0045_muc":
            assert f"`{option.env_var}`" in doc and option.doc in doc


def test_doc_lists_every_core_option():
    doc = cfg.render_markdown()
    for option in cfg.REGISTRY:
        if option.owner == cfg.__name__:
            assert f"`{option.env_var}`" in doc
            assert option.doc in doc


def test_module_main_prints_doc():
    result = subprocess.run(
        [sys.executable, "-m", "sat.memory.config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout == (ROOT / "doc/configuration.md").read_text(encoding="utf-8"), (
        "doc/configuration.md is out of date: run "
        "`python -m sat.memory.config > doc/configuration.md`"
    )
