"""Top-level test configuration.

Tests run on Twisted's asyncio reactor (``--reactor=asyncio`` from
pytest-twisted, set in pyproject.toml), like the daemon. Environment variables
that could make a test touch the real home or bus are reset here.
"""

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_environment(tmp_path_factory):
    """Point XDG dirs and HOME-derived paths to a temporary place for the whole run."""
    base = tmp_path_factory.mktemp("home")
    saved = {k: os.environ.get(k) for k in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR")}
    os.environ["XDG_CONFIG_HOME"] = str(base / "config")
    os.environ["XDG_DATA_HOME"] = str(base / "data")
    os.environ["XDG_RUNTIME_DIR"] = str(base / "run")
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
