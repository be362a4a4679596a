"""Consistent colour generation (XEP-0392, version 0.6/1.0): same nick, same colour everywhere.

1. angle: SHA-1 of the UTF-8 identifier, its first two bytes as a little-endian 16-bit number,
   divided by 65536 and multiplied by 360;
2. optional corrections for colour vision deficiencies (red/green, blue);
3. RGB from HSLuv with saturation 100 and lightness 50, or, for a terminal, the palette colour
   whose HSLuv hue is closest (section "Mapping of a Hue angle to closest palette color"), the
   palette being the 6×6×6 colour cube of 256-colour terminals (indexes 16-231, grays left out
   as the XEP says), built once with "Conversion of an RGB color palette to a Hue palette".

The HSLuv conversions are written here from the colour-space definitions (CIE XYZ, CIE LUV,
LCh(uv) and the sRGB gamut bounds); the test vectors of the XEP check them.
"""

from __future__ import annotations

import functools
import hashlib
import math

__all__ = [
    "angle",
    "corrected",
    "hsluv_to_rgb",
    "rgb_to_hsluv",
    "rgb",
    "xterm_palette",
    "palette_index",
    "xterm_index",
    "hex_colour",
    "CVD_MODES",
]

CVD_MODES = ("none", "redgreen", "blue")

# sRGB <-> CIE XYZ (D65) matrices
_M = (
    (3.240969941904521, -1.537383177570093, -0.498610760293),
    (-0.96924363628087, 1.87596750150772, 0.041555057407175),
    (0.055630079696993, -0.20397695888897, 1.056971514242878),
)
_M_INV = (
    (0.41239079926595, 0.35758433938387, 0.18048078840183),
    (0.21263900587151, 0.71516867876775, 0.072192315360733),
    (0.019330818715591, 0.11919477979462, 0.95053215224966),
)
_REF_U = 0.19783000664283
_REF_V = 0.46831999493879
_KAPPA = 903.2962962
_EPSILON = 0.0088564516


def angle(identifier: str) -> float:
    """The hue angle of ``identifier`` in degrees (XEP-0392 "Angle generation")."""
    digest = hashlib.sha1(identifier.encode("utf-8")).digest()
    return (digest[0] | digest[1] << 8) / 65536 * 360


def corrected(hue: float, cvd: str = "none") -> float:
    """Apply a colour vision deficiency correction ("none", "redgreen" or "blue")."""
    if cvd == "redgreen":
        return ((hue + 90) % 180 - 90) % 360
    if cvd == "blue":
        return hue % 180
    return hue


# --------------------------------------------------------------------------- HSLuv


def _bounds(lightness: float) -> list[tuple[float, float]]:
    """The six lines (slope, intercept) bounding the sRGB gamut at this lightness."""
    sub1 = (lightness + 16) ** 3 / 1560896
    sub2 = sub1 if sub1 > _EPSILON else lightness / _KAPPA
    lines = []
    for m1, m2, m3 in _M:
        for t in (0, 1):
            top1 = (284517 * m1 - 94839 * m3) * sub2
            top2 = (838422 * m3 + 769860 * m2 + 731718 * m1) * lightness * sub2 - (
                769860 * t * lightness
            )
            bottom = (632260 * m3 - 126452 * m2) * sub2 + 126452 * t
            lines.append((top1 / bottom, top2 / bottom))
    return lines


def _max_chroma(lightness: float, hue: float) -> float:
    rad = math.radians(hue)
    best = math.inf
    for slope, intercept in _bounds(lightness):
        length = intercept / (math.sin(rad) - slope * math.cos(rad))
        if length >= 0:
            best = min(best, length)
    return best


def _from_linear(c: float) -> float:
    return 12.92 * c if c <= 0.0031308 else 1.055 * c ** (1 / 2.4) - 0.055


def _to_linear(c: float) -> float:
    return ((c + 0.055) / 1.055) ** 2.4 if c > 0.04045 else c / 12.92


def hsluv_to_rgb(hue: float, saturation: float, lightness: float) -> tuple[float, float, float]:
    """HSLuv (degrees, 0-100, 0-100) to sRGB (0-1 each)."""
    if lightness > 99.9999999:
        return (1.0, 1.0, 1.0)
    if lightness < 1e-8:
        return (0.0, 0.0, 0.0)
    chroma = _max_chroma(lightness, hue) / 100 * saturation
    rad = math.radians(hue)
    u, v = chroma * math.cos(rad), chroma * math.sin(rad)
    var_u = u / (13 * lightness) + _REF_U
    var_v = v / (13 * lightness) + _REF_V
    y = lightness / _KAPPA if lightness <= 8 else ((lightness + 16) / 116) ** 3
    x = -(9 * y * var_u) / ((var_u - 4) * var_v - var_u * var_v)
    z = (9 * y - 15 * var_v * y - var_v * x) / (3 * var_v)
    out = []
    for m1, m2, m3 in _M:
        out.append(min(1.0, max(0.0, _from_linear(m1 * x + m2 * y + m3 * z))))
    return out[0], out[1], out[2]


def rgb_to_hsluv(r: float, g: float, b: float) -> tuple[float, float, float]:
    """sRGB (0-1 each) to HSLuv (hue degrees, saturation 0-100, lightness 0-100)."""
    lin = (_to_linear(r), _to_linear(g), _to_linear(b))
    x, y, z = (m1 * lin[0] + m2 * lin[1] + m3 * lin[2] for m1, m2, m3 in _M_INV)
    lightness = y * _KAPPA if y <= _EPSILON else 116 * y ** (1 / 3) - 16
    if lightness < 1e-8:
        return 0.0, 0.0, 0.0
    divider = x + 15 * y + 3 * z
    var_u = 4 * x / divider
    var_v = 9 * y / divider
    u = 13 * lightness * (var_u - _REF_U)
    v = 13 * lightness * (var_v - _REF_V)
    chroma = math.hypot(u, v)
    hue = 0.0 if chroma < 1e-8 else math.degrees(math.atan2(v, u)) % 360
    if lightness > 99.9999999:
        return hue, 0.0, 100.0
    return hue, chroma / _max_chroma(lightness, hue) * 100, lightness


# --------------------------------------------------------------------------- colours


def rgb(identifier: str, cvd: str = "none") -> tuple[float, float, float]:
    """The XEP-0392 RGB colour (0-1 each) of ``identifier``."""
    return hsluv_to_rgb(corrected(angle(identifier), cvd), 100, 50)


def hex_colour(identifier: str, cvd: str = "none") -> str:
    return "#" + "".join(f"{round(c * 255):02x}" for c in rgb(identifier, cvd))


_CUBE = (0, 0x5F, 0x87, 0xAF, 0xD7, 0xFF)


def xterm_cube_rgb(index: int) -> tuple[float, float, float]:
    """RGB (0-1) of a 256-colour terminal's cube colour (16-231)."""
    i = index - 16
    return (_CUBE[i // 36] / 255, _CUBE[i // 6 % 6] / 255, _CUBE[i % 6] / 255)


def hue_palette(colours: dict) -> dict[int, object]:
    """XEP-0392 "Conversion of an RGB color palette to a Hue palette": angle -> colour key.

    ``colours`` maps a key (a palette index, say) to its RGB triple (0-1).
    """
    best: dict[int, tuple[float, object]] = {}
    for key, (r, g, b) in colours.items():
        if r == g == b:
            continue
        hue, _s, lightness = rgb_to_hsluv(r, g, b)
        rounded = round(hue) % 360
        current = best.get(rounded)
        if current is None or abs(current[0] - 73.2) > abs(lightness - 73.2):
            best[rounded] = (lightness, key)
    return {h: key for h, (_l, key) in best.items()}


def palette_index(hue: float, palette: dict[int, object]) -> object:
    """XEP-0392 "Mapping of a Hue angle to closest palette color"."""
    exact = palette.get(round(hue) % 360)
    if exact is not None:
        return exact
    nearest = min(palette, key=lambda beta: min((hue - beta) % 360, (beta - hue) % 360))
    return palette[nearest]


@functools.cache
def xterm_palette() -> dict[int, int]:
    """Hue palette of the 256-colour cube: angle -> terminal colour index (16-231)."""
    return hue_palette({i: xterm_cube_rgb(i) for i in range(16, 232)})


@functools.lru_cache(maxsize=4096)
def xterm_index(identifier: str, cvd: str = "none") -> int:
    """The 256-colour terminal index (16-231) for ``identifier``."""
    return palette_index(corrected(angle(identifier), cvd), xterm_palette())


#: 16-colour fallback: basic terminal colours by hue sector (for terminals without 256 colours)
BASIC_BY_HUE = (
    (30, "light red"),
    (75, "brown"),
    (105, "yellow"),
    (160, "light green"),
    (200, "dark cyan"),
    (250, "light blue"),
    (290, "dark magenta"),
    (335, "light magenta"),
    (360, "light red"),
)


@functools.lru_cache(maxsize=4096)
def basic_colour(identifier: str, cvd: str = "none") -> str:
    """A basic (16-colour) urwid colour name near ``identifier``'s hue."""
    hue = corrected(angle(identifier), cvd)
    for limit, name in BASIC_BY_HUE:
        if hue < limit:
            return name
    return "light red"
