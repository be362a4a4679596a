"""``python -m tests.e2e.asker_daemon fg --config FILE``: the real daemon (``sat fg``) with the
test plugins of ``tests/e2e/daemon_plugins`` loaded as well (they add test-only bridge
methods, such as ``E2eAsk``)."""

from __future__ import annotations

import sys
from pathlib import Path

import sat.plugins

sat.plugins.__path__.append(str(Path(__file__).resolve().parent / "daemon_plugins"))

from sat.launcher import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
