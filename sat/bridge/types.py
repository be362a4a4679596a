"""Conversions between plain Python values and D-Bus wire values, and member naming.

Handlers and frontends only ever see plain Python values: ``str``, ``int``, ``float``,
``bool``, ``bytes``, ``list`` and ``dict``. On the wire, D-Bus needs every ``v`` (variant)
to carry its own signature; this module turns plain values into what dbus-fast marshals
(:func:`compile_to_wire`) and back (:func:`from_wire`).

Open records (``a{sv}``) get a signature guessed from each value's Python type:

=========================  ==========
Python                     D-Bus
=========================  ==========
``str``                    ``s``
``bool``                   ``b``
``int``                    ``x`` (``t`` above 2**63-1)
``float``                  ``d``
``bytes``/``bytearray``    ``ay``
``dict``                   ``a{sv}``
list of ``str``            ``as``
list of ``dict``           ``aa{sv}``
list of ``bool``/``int``/  ``ab``/``ax``/``ad``/``aay``
``float``/``bytes``
empty list                 ``as``
other lists                ``av``
``None`` (in a record)     key left out
=========================  ==========

The same conversion runs for in-process calls (value -> wire -> value), so a handler sees
exactly what it would see over D-Bus (arrays are lists, structs tuples, ``None`` record values
vanish, an ``int`` given for a ``d`` argument arrives as ``float``).

This module has a twin on the client side (``sat_frontends.bridge.dbus_client``), because
frontends must not import the backend; ``tests/unit/test_bridge_contract.py`` checks both agree.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from dbus_fast import Variant
from dbus_fast.signature import SignatureType, get_signature_tree
from dbus_fast.validators import is_object_path_valid

__all__ = [
    "WireTypeError",
    "camel_to_snake",
    "snake_to_camel",
    "parse_single_type",
    "compile_to_wire",
    "guess_variant",
    "from_wire",
]

_INT_RANGES = {
    "y": (0, 2**8 - 1),
    "n": (-(2**15), 2**15 - 1),
    "q": (0, 2**16 - 1),
    "i": (-(2**31), 2**31 - 1),
    "u": (0, 2**32 - 1),
    "x": (-(2**63), 2**63 - 1),
    "t": (0, 2**64 - 1),
}
_INT64_MIN, _INT64_MAX = _INT_RANGES["x"]
_UINT64_MAX = _INT_RANGES["t"][1]

# ---------------------------------------------------------------------------- naming

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
CAMEL_NAME = re.compile(r"^[A-Z][A-Za-z0-9]*$")


def camel_to_snake(name: str) -> str:
    """``ProfileCreate`` -> ``profile_create``; ``MUCJoin`` -> ``muc_join``."""
    return _CAMEL_BOUNDARY.sub("_", name).lower()


def snake_to_camel(name: str) -> str:
    """``profile_create`` -> ``ProfileCreate``; CamelCase input is returned unchanged.

    Acronyms are lost (``muc_join`` -> ``MucJoin``): clients resolve snake_case names with
    the table built from the daemon's introspection data and use this only as a fallback.
    """
    if "_" not in name and name[:1].isupper():
        return name
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


# ---------------------------------------------------------------------------- signatures


def parse_single_type(signature: str) -> SignatureType:
    """Parse a signature holding exactly one complete type; raise ValueError otherwise."""
    if not isinstance(signature, str):
        raise ValueError(f"a D-Bus signature must be a str, not {type(signature).__name__}")
    tree = get_signature_tree(signature)  # raises InvalidSignatureError (a ValueError)
    if len(tree.types) != 1:
        raise ValueError(f"signature {signature!r} must be exactly one complete type")
    if "h" in signature:
        raise ValueError(f"signature {signature!r}: file descriptors (h) are not supported")
    return tree.types[0]


class WireTypeError(ValueError):
    """A value does not fit its D-Bus signature. ``path`` locates it inside containers."""

    def __init__(self, message: str, path: tuple[str, ...] = ()):
        super().__init__(message)
        self.reason = message
        self.path = path

    def within(self, step: str) -> WireTypeError:
        return WireTypeError(self.reason, (step, *self.path))

    def __str__(self) -> str:
        where = "".join(self.path)
        return f"at {where}: {self.reason}" if where else self.reason


def _type_name(value: Any) -> str:
    return type(value).__name__


def _int_converter(token: str) -> Callable[[Any], int]:
    low, high = _INT_RANGES[token]

    def convert(value):
        if type(value) is not int:
            if not isinstance(value, int) or isinstance(value, bool):
                raise WireTypeError(f"expected int ({token}), got {_type_name(value)}")
            value = int(value)
        if value < low or value > high:
            raise WireTypeError(f"{value} is out of range for {token} [{low}, {high}]")
        return value

    return convert


def _str(value):
    if type(value) is str:
        return value
    if isinstance(value, str):
        return str(value)
    raise WireTypeError(f"expected str, got {_type_name(value)}")


def _object_path(value):
    value = _str(value)
    if not is_object_path_valid(value):
        raise WireTypeError(f"{value!r} is not a valid object path")
    return value


def _signature(value):
    value = _str(value)
    try:
        get_signature_tree(value)
    except ValueError as e:
        raise WireTypeError(f"{value!r} is not a valid signature: {e}") from None
    return value


def _bool(value):
    if type(value) is bool:
        return value
    raise WireTypeError(f"expected bool, got {_type_name(value)}")


def _double(value):
    if type(value) is float:
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise WireTypeError(f"expected float, got {_type_name(value)}")


def _bytes(value):
    if type(value) is bytes:
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise WireTypeError(f"expected bytes, got {_type_name(value)}")


def _is_sequence(value) -> bool:
    return isinstance(value, (list, tuple))


def compile_to_wire(sig: str | SignatureType) -> Callable[[Any], Any]:
    """Return a function checking a plain value against ``sig`` and returning its wire form.

    The function raises :class:`WireTypeError` when the value does not fit. Integers are not
    accepted for booleans nor booleans for integers; ``int`` is accepted for ``d``.
    """
    if isinstance(sig, str):
        sig = parse_single_type(sig)
    token = sig.token
    if token == "s":
        return _str
    if token == "o":
        return _object_path
    if token == "g":
        return _signature
    if token in _INT_RANGES:
        return _int_converter(token)
    if token == "d":
        return _double
    if token == "b":
        return _bool
    if token == "v":
        return guess_variant
    if token == "a":
        child = sig.children[0]
        if child.token == "y":
            return _bytes
        if child.token == "{":
            return _dict_converter(child)
        return _array_converter(child)
    if token == "(":
        return _struct_converter(sig)
    raise ValueError(f"unsupported D-Bus type {sig.signature!r}")


def _dict_converter(entry: SignatureType) -> Callable[[Any], dict]:
    key_type, value_type = entry.children
    convert_key = compile_to_wire(key_type)
    convert_value = compile_to_wire(value_type)
    drop_none = value_type.token == "v"

    def convert(value):
        if not isinstance(value, Mapping):
            raise WireTypeError(f"expected dict, got {_type_name(value)}")
        out = {}
        for key, item in value.items():
            if item is None and drop_none:
                continue
            try:
                out[convert_key(key)] = convert_value(item)
            except WireTypeError as e:
                raise e.within(f"[{key!r}]") from None
        return out

    return convert


def _array_converter(element: SignatureType) -> Callable[[Any], list]:
    convert_element = compile_to_wire(element)

    def convert(value):
        if not _is_sequence(value):
            raise WireTypeError(f"expected list, got {_type_name(value)}")
        out = []
        for index, item in enumerate(value):
            try:
                out.append(convert_element(item))
            except WireTypeError as e:
                raise e.within(f"[{index}]") from None
        return out

    return convert


def _struct_converter(struct: SignatureType) -> Callable[[Any], tuple]:
    converters = [compile_to_wire(child) for child in struct.children]
    size = len(converters)

    def convert(value):
        if not _is_sequence(value):
            raise WireTypeError(f"expected a {size}-item tuple, got {_type_name(value)}")
        if len(value) != size:
            raise WireTypeError(f"expected a {size}-item tuple, got {len(value)} items")
        out = []
        for index, (conv, item) in enumerate(zip(converters, value, strict=True)):
            try:
                out.append(conv(item))
            except WireTypeError as e:
                raise e.within(f"[{index}]") from None
        return tuple(out)  # dbus-fast reads structs as tuples

    return convert


def guess_variant(value: Any) -> Variant:
    """Wrap a plain value in a Variant whose signature is guessed from its Python type."""
    kind = type(value)
    if kind is str:
        return Variant("s", value, False)
    if kind is bool:
        return Variant("b", value, False)
    if kind is int:
        if _INT64_MIN <= value <= _INT64_MAX:
            return Variant("x", value, False)
        if 0 <= value <= _UINT64_MAX:
            return Variant("t", value, False)
        raise WireTypeError(f"{value} does not fit in 64 bits")
    if kind is float:
        return Variant("d", value, False)
    if kind is Variant:
        return value
    if value is None:
        raise WireTypeError("None cannot be sent (leave the key out instead)")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return Variant("ay", bytes(value), False)
    if isinstance(value, Mapping):
        return Variant("a{sv}", _RECORD(value), False)
    if isinstance(value, (list, tuple)):
        if not value:
            return Variant("as", [], False)
        for test, sig in _LIST_GUESSES:
            if all(test(item) for item in value):
                return Variant(sig, _LIST_CONVERTERS[sig](value), False)
        items = []
        for index, item in enumerate(value):
            try:
                items.append(guess_variant(item))
            except WireTypeError as e:
                raise e.within(f"[{index}]") from None
        return Variant("av", items, False)
    # subclasses of the basic types (IntEnum, str subclasses...)
    if isinstance(value, bool):
        return Variant("b", bool(value), False)
    if isinstance(value, int):
        return guess_variant(int(value))
    if isinstance(value, float):
        return Variant("d", float(value), False)
    if isinstance(value, str):
        return Variant("s", str(value), False)
    raise WireTypeError(f"cannot send a {_type_name(value)} (no D-Bus type for it)")


_RECORD = compile_to_wire("a{sv}")
_LIST_GUESSES = (
    # (element test, signature): the first test every element passes wins
    (lambda x: type(x) is str, "as"),
    (lambda x: isinstance(x, Mapping), "aa{sv}"),
    (lambda x: type(x) is bool, "ab"),
    (lambda x: type(x) is int and _INT64_MIN <= x <= _INT64_MAX, "ax"),
    (lambda x: type(x) is float, "ad"),
    (lambda x: isinstance(x, (bytes, bytearray, memoryview)), "aay"),
)
_LIST_CONVERTERS = {sig: compile_to_wire(sig) for _, sig in _LIST_GUESSES}


def from_wire(value: Any) -> Any:
    """Unwrap every Variant inside ``value``, recursively, giving plain Python values."""
    kind = type(value)
    if kind is Variant:
        return from_wire(value.value)
    if kind is dict:
        return {key: from_wire(item) for key, item in value.items()}
    if kind is list:
        return [from_wire(item) for item in value]
    if kind is tuple:  # structs
        return tuple(from_wire(item) for item in value)
    return value
