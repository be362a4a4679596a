"""The README's demo command works from a clean state."""

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_demo_runs_the_whole_scenario():
    result = subprocess.run(
        [str(REPO / "scripts" / "demo"), "--once"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "profile demo1: connected as demo1@localhost/" in result.stdout
    assert "demo2 received from demo1@localhost/sat: Salut à toi, demo2 !" in result.stdout
    assert "['Salut à toi, demo2 !']" in result.stdout
