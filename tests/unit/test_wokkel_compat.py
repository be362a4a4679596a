"""Every wokkel module the project uses imports on current Twisted (through our shim)."""

import importlib
import importlib.util
import subprocess
import sys

import pytest

from sat.core.wokkel_compat import USED_WOKKEL_MODULES


@pytest.mark.parametrize("module", USED_WOKKEL_MODULES)
def test_wokkel_module_imports_in_a_fresh_interpreter(module):
    # a fresh interpreter: nothing else has patched Twisted before the shim runs
    code = f"import sat.core.wokkel_compat; import {module}"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_wokkel_import_in_the_code_is_listed():
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[2]
    used = set()
    for path in list((root / "sat").rglob("*.py")):
        for match in re.finditer(
            r"^\s*(?:from wokkel(?:\.(\w+))? import (\w+)|import wokkel\.(\w+))",
            path.read_text(),
            re.M,
        ):
            name = match.group(1) or match.group(3)
            if name:
                used.add(f"wokkel.{name}")
            elif match.group(2):
                candidate = f"wokkel.{match.group(2)}"
                if importlib.util.find_spec(candidate) is not None:
                    used.add(candidate)
    assert used <= set(USED_WOKKEL_MODULES), used - set(USED_WOKKEL_MODULES)
