"""Small valid images for avatar tests, made without any imaging library."""

from __future__ import annotations

import struct
import zlib


def png(seed: int = 0, size: int = 8) -> bytes:
    """A valid ``size`` x ``size`` RGB PNG of one colour derived from ``seed`` (another seed,
    other bytes)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    pixel = bytes([seed % 256, (seed * 7) % 256, 90])
    raw = b"".join(b"\x00" + pixel * size for _ in range(size))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
