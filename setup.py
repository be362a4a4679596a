"""Shim for tools that still run ``setup.py``: everything is declared in pyproject.toml.

Packaging notes (see doc/daemon.md):

- ``twisted/plugins/sat_plugin.py`` is shipped as the ``twisted.plugins``
  namespace package (declared in pyproject.toml), so a regular ``pip install .``
  puts it in ``site-packages/twisted/plugins/`` where ``twistd`` finds it. There
  must be no ``twisted/__init__.py`` nor ``twisted/plugins/__init__.py`` in the
  source tree: they would shadow Twisted's own packages.
- An editable install does not make the plugin visible to ``twistd`` (the
  ``sat`` launcher does not need it: it runs the service itself).
"""

from pathlib import Path

from setuptools import setup

_here = Path(__file__).resolve().parent
for _shadow in ("twisted/__init__.py", "twisted/plugins/__init__.py"):
    if (_here / _shadow).exists():
        raise SystemExit(f"{_shadow} must not exist: it would shadow Twisted's own package")

setup()
