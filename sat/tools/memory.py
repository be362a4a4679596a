"""Keep the daemon's resident memory close to what it really uses.

scrypt (the key derivation protecting profile secrets) allocates 16 MiB each time a
profile is created or unlocked. glibc serves such blocks from its heap and keeps them
after they are freed, so a daemon that unlocked one profile stayed at ~100 MB of RSS.
Serving blocks of 1 MiB and more with mmap gives them back to the system on free.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

#: glibc's mallopt parameter number for the mmap threshold
M_MMAP_THRESHOLD = -3


def release_large_blocks(threshold: int = 1 << 20) -> bool:
    """Ask glibc to mmap (and so return on free) blocks of ``threshold`` bytes and more.

    Returns False where it does not apply (not glibc).
    """
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, threshold))
    if not ok:
        log.debug("mallopt(M_MMAP_THRESHOLD) refused")
    return ok
