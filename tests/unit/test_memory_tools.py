"""glibc is asked to return big blocks (scrypt's 16 MiB) to the system."""

import platform

from sat.tools.memory import release_large_blocks


def test_release_large_blocks_on_glibc():
    if platform.libc_ver()[0] == "glibc":
        assert release_large_blocks() is True
    else:
        assert release_large_blocks() in (True, False)
