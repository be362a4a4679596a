"""Secrets at rest, and keeping them out of the logs.

Each profile has a random 32-byte *personal key*. It is stored *wrapped*:
encrypted (AES-256-GCM) with a key derived from the profile password by
scrypt. The profile's secrets (its XMPP password, later OMEMO keys...) are
encrypted with the personal key, so changing the profile password only
re-wraps the personal key::

    key, wrapped = PersonalKey.create("profile password")   # store `wrapped`
    blob = key.encrypt("xmpp password", associated_data("alice", "xmpp_password"))
    ...
    key = PersonalKey.unwrap(wrapped, "profile password")   # PermissionDenied if wrong
    key.decrypt(blob, associated_data("alice", "xmpp_password"))  # -> b"xmpp password"

scrypt is slow on purpose (tens of milliseconds, 16 MiB): call :meth:`PersonalKey.create`,
:meth:`PersonalKey.unwrap` and :meth:`PersonalKey.rewrap` off the reactor thread.

Blob formats (all integers big endian). A wrapped personal key (version 1)::

    0x01 | kdf (1 byte: 0x01 = scrypt) | log2(n) (1) | r (2) | p (2)
         | salt length (1) | salt | nonce (12) | AES-GCM(personal key) + tag (48)

the header (everything before the nonce) is authenticated as associated data,
and kept with the blob so the scrypt parameters can change later (see
:meth:`PersonalKey.needs_rewrap`). A secret (version 1)::

    0x01 | nonce (12) | AES-GCM(plaintext) + tag (16)

authenticated with the version byte and the caller's associated data, which
binds a secret to its profile and name (see :func:`associated_data`) so a blob
cannot be moved to another profile or field.

:class:`SecretsFilter` replaces registered secrets (passwords...) by ``***``
in log records; :func:`install_secrets_filter` puts it on the root logger and
its handlers.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import struct
import threading
import unicodedata
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from sat.core.errors import PermissionDenied

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
SALT_SIZE = 16

WRAP_VERSION = 1
SECRET_VERSION = 1
KDF_SCRYPT = 1

_WRAP_HEADER = struct.Struct(">BBBHHB")  # version, kdf, log2(n), r, p, salt length
_WRAP_AD = b"SAT personal key\x00"
_SECRET_AD = b"SAT secret\x00"
_WRONG_PASSWORD = "wrong profile password"

# refuse parameters that would make unwrapping a forged blob eat the machine
_MAX_LOG2_N = 22
_MAX_R = 64
_MAX_P = 64
_MAX_SCRYPT_MEMORY = 1 << 30


@dataclass(frozen=True)
class ScryptParams:
    """scrypt cost parameters; ``n`` must be a power of two."""

    n: int = 2**14
    r: int = 8
    p: int = 1

    def __post_init__(self):
        if self.n < 2 or self.n & (self.n - 1):
            raise ValueError("scrypt n must be a power of two >= 2")
        if not (
            self.n.bit_length() - 1 <= _MAX_LOG2_N
            and 1 <= self.r <= _MAX_R
            and 1 <= self.p <= _MAX_P
            and 128 * self.n * self.r <= _MAX_SCRYPT_MEMORY
        ):
            raise ValueError(f"scrypt parameters out of bounds: {self}")

    @property
    def log2_n(self) -> int:
        return self.n.bit_length() - 1


#: parameters of newly wrapped keys
DEFAULT_SCRYPT = ScryptParams()


def _password_bytes(password: str | bytes) -> bytes:
    if isinstance(password, bytes | bytearray | memoryview):
        return bytes(password)
    if not isinstance(password, str):
        raise TypeError("the profile password must be str or bytes")
    # the same password typed on different systems may come composed or decomposed
    return unicodedata.normalize("NFC", password).encode("utf-8")


def _derive(password: str | bytes, salt: bytes, params: ScryptParams) -> bytes:
    kdf = Scrypt(salt=salt, length=KEY_SIZE, n=params.n, r=params.r, p=params.p)
    return kdf.derive(_password_bytes(password))


def associated_data(*parts: str | bytes) -> bytes:
    """Unambiguous associated data from ``parts`` (e.g. profile name and secret name).

    Each part is length-prefixed, so ``("ab", "c")`` and ``("a", "bc")`` differ.
    """
    out = bytearray()
    for part in parts:
        data = part.encode("utf-8") if isinstance(part, str) else bytes(part)
        out += struct.pack(">I", len(data)) + data
    return bytes(out)


class PersonalKey:
    """A profile's personal key: encrypts its secrets. Never shows nor pickles its bytes."""

    __slots__ = ("_aead", "_key")

    def __init__(self, key: bytes):
        if not isinstance(key, bytes) or len(key) != KEY_SIZE:
            raise ValueError(f"a personal key is {KEY_SIZE} bytes")
        self._key = key
        self._aead = AESGCM(key)

    # creation and wrapping

    @classmethod
    def create(
        cls, profile_password: str | bytes, *, params: ScryptParams | None = None
    ) -> tuple[PersonalKey, bytes]:
        """A new random key, and its wrapped form (to store) for ``profile_password``."""
        key = cls(os.urandom(KEY_SIZE))
        return key, key.rewrap(profile_password, params=params)

    def rewrap(self, new_password: str | bytes, *, params: ScryptParams | None = None) -> bytes:
        """This key wrapped for ``new_password`` (with a fresh salt and nonce)."""
        params = DEFAULT_SCRYPT if params is None else params
        salt = os.urandom(SALT_SIZE)
        header = (
            _WRAP_HEADER.pack(
                WRAP_VERSION, KDF_SCRYPT, params.log2_n, params.r, params.p, SALT_SIZE
            )
            + salt
        )
        nonce = os.urandom(NONCE_SIZE)
        kek = AESGCM(_derive(new_password, salt, params))
        return header + nonce + kek.encrypt(nonce, self._key, _WRAP_AD + header)

    @staticmethod
    def _parse_wrapped(wrapped: bytes) -> tuple[ScryptParams, bytes, bytes, bytes, bytes]:
        """(params, salt, header, nonce, ciphertext); PermissionDenied if malformed."""
        if not isinstance(wrapped, bytes | bytearray | memoryview):
            raise TypeError("a wrapped key is bytes")
        wrapped = bytes(wrapped)
        if len(wrapped) < _WRAP_HEADER.size:
            raise PermissionDenied("invalid wrapped key: truncated")
        version, kdf, log2_n, r, p, salt_len = _WRAP_HEADER.unpack_from(wrapped)
        if version != WRAP_VERSION:
            raise PermissionDenied(f"invalid wrapped key: unknown version {version}")
        if kdf != KDF_SCRYPT:
            raise PermissionDenied(f"invalid wrapped key: unknown key derivation {kdf}")
        header_len = _WRAP_HEADER.size + salt_len
        if len(wrapped) != header_len + NONCE_SIZE + KEY_SIZE + TAG_SIZE or salt_len < 8:
            raise PermissionDenied("invalid wrapped key: wrong length")
        if not 1 <= log2_n <= _MAX_LOG2_N:
            raise PermissionDenied("invalid wrapped key: scrypt parameters out of bounds")
        try:
            params = ScryptParams(n=1 << log2_n, r=r, p=p)
        except ValueError:
            raise PermissionDenied("invalid wrapped key: scrypt parameters out of bounds") from None
        header = wrapped[:header_len]
        salt = wrapped[_WRAP_HEADER.size : header_len]
        nonce = wrapped[header_len : header_len + NONCE_SIZE]
        ciphertext = wrapped[header_len + NONCE_SIZE :]
        return params, salt, header, nonce, ciphertext

    @classmethod
    def unwrap(cls, wrapped: bytes, profile_password: str | bytes) -> PersonalKey:
        """The key ``wrapped`` holds; ``PermissionDenied`` on a wrong password or altered blob."""
        params, salt, header, nonce, ciphertext = cls._parse_wrapped(wrapped)
        kek = AESGCM(_derive(profile_password, salt, params))
        try:
            key = kek.decrypt(nonce, ciphertext, _WRAP_AD + header)
        except InvalidTag:
            # AES-GCM can't tell a wrong password from an altered blob
            raise PermissionDenied(_WRONG_PASSWORD) from None
        return cls(key)

    @classmethod
    def needs_rewrap(cls, wrapped: bytes, params: ScryptParams | None = None) -> bool:
        """Whether ``wrapped`` uses other scrypt parameters than ``params`` (the current ones).

        The profile manager may then re-wrap the key (with the password it just
        checked) to upgrade it.
        """
        stored = cls._parse_wrapped(wrapped)[0]
        return stored != (DEFAULT_SCRYPT if params is None else params)

    # secrets

    def encrypt(self, plaintext: bytes | str, associated: bytes = b"") -> bytes:
        """Encrypt ``plaintext`` (str is UTF-8 encoded), bound to ``associated``."""
        if isinstance(plaintext, str):
            plaintext = plaintext.encode("utf-8")
        header = bytes((SECRET_VERSION,))
        nonce = os.urandom(NONCE_SIZE)
        return (
            header
            + nonce
            + self._aead.encrypt(nonce, bytes(plaintext), _SECRET_AD + header + bytes(associated))
        )

    def decrypt(self, blob: bytes, associated: bytes = b"") -> bytes:
        """The plaintext of ``blob``; ``PermissionDenied`` if it was not encrypted with this
        key and ``associated``, or was altered."""
        blob = bytes(blob)
        if len(blob) < 1 + NONCE_SIZE + TAG_SIZE:
            raise PermissionDenied("cannot decrypt the secret: truncated data")
        if blob[0] != SECRET_VERSION:
            raise PermissionDenied(f"cannot decrypt the secret: unknown version {blob[0]}")
        nonce = blob[1 : 1 + NONCE_SIZE]
        try:
            return self._aead.decrypt(
                nonce, blob[1 + NONCE_SIZE :], _SECRET_AD + blob[:1] + bytes(associated)
            )
        except InvalidTag:
            raise PermissionDenied(
                "cannot decrypt the secret: wrong key or associated data, or altered data"
            ) from None

    # hygiene

    def __repr__(self) -> str:
        return "<PersonalKey (hidden)>"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PersonalKey):
            return NotImplemented
        return hmac.compare_digest(self._key, other._key)

    __hash__ = None  # type: ignore[assignment]

    def __reduce_ex__(self, protocol):
        raise TypeError("a PersonalKey cannot be pickled or copied (it would leak the key)")


# --- keeping secrets out of the logs -----------------------------------------

REDACTED = "***"


class _SecretStore:
    """The registered secrets and the pattern matching any of them."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._pattern: re.Pattern[str] | None = None

    @staticmethod
    def _variants(secret: str) -> set[str]:
        # the forms a secret takes in a log line: as is, inside repr() of a str or of bytes
        variants = {secret, repr(secret)[1:-1], repr(secret.encode("utf-8"))[2:-1]}
        return {v for v in variants if v}

    def _compile(self) -> None:
        variants = set()
        for secret in self._counts:
            variants |= self._variants(secret)
        if not variants:
            self._pattern = None
            return
        # longest first, so a secret containing another is replaced whole
        alternatives = sorted(variants, key=lambda v: (-len(v), v))
        self._pattern = re.compile("|".join(re.escape(v) for v in alternatives))

    def register(self, secret: str | bytes) -> None:
        if isinstance(secret, bytes | bytearray):
            secret = bytes(secret).decode("utf-8", "backslashreplace")
        if not secret:
            return
        with self._lock:
            self._counts[secret] = self._counts.get(secret, 0) + 1
            self._compile()

    def unregister(self, secret: str | bytes) -> None:
        if isinstance(secret, bytes | bytearray):
            secret = bytes(secret).decode("utf-8", "backslashreplace")
        with self._lock:
            count = self._counts.get(secret, 0)
            if count <= 1:
                self._counts.pop(secret, None)
            else:
                self._counts[secret] = count - 1
            self._compile()

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()
            self._pattern = None

    def redact(self, text: str) -> str:
        pattern = self._pattern
        if pattern is None or not text:
            return text
        return pattern.sub(REDACTED, text)

    def __bool__(self) -> bool:
        return self._pattern is not None


_secrets = _SecretStore()


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    return _secrets.redact(text)


class SecretsFilter(logging.Filter):
    """Replace registered secrets by ``***`` in log records (message, arguments, traceback).

    Secrets are shared by every instance: ``SecretsFilter.register(password)``
    as soon as a password is known. Note that a filter set on a *logger* only
    sees records logged on that very logger, not those propagated from its
    children: put it on the handlers, as :func:`install_secrets_filter` does.
    """

    @staticmethod
    def register(secret: str | bytes) -> None:
        """Redact ``secret`` from now on (registering twice needs two unregisters)."""
        _secrets.register(secret)

    @staticmethod
    def unregister(secret: str | bytes) -> None:
        """Stop redacting ``secret`` (e.g. a password that was changed)."""
        _secrets.unregister(secret)

    @staticmethod
    def clear() -> None:
        """Forget every registered secret (for tests)."""
        _secrets.clear()

    def filter(self, record: logging.LogRecord) -> bool:
        if not _secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:
            # a bad format string: logging would print msg and args raw in its error report
            message = f"{record.msg!s} (arguments: {record.args!r})"
        redacted = _secrets.redact(message)
        if redacted != message:
            record.msg = redacted
            record.args = None
        if record.exc_info and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            if _secrets.redact(text) != text:
                record.exc_text = _secrets.redact(text)
        elif record.exc_text:
            record.exc_text = _secrets.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = _secrets.redact(record.stack_info)
        return True


def install_secrets_filter(logger: logging.Logger | None = None) -> SecretsFilter:
    """Put a :class:`SecretsFilter` on ``logger`` (the root logger) and each of its handlers.

    Handlers added to the logger later need ``handler.addFilter(filter)`` too.
    Idempotent.
    """
    logger = logging.getLogger() if logger is None else logger
    existing = next((f for f in logger.filters if isinstance(f, SecretsFilter)), None)
    secrets_filter = existing or SecretsFilter()
    if existing is None:
        logger.addFilter(secrets_filter)
    for handler in logger.handlers:
        if not any(isinstance(f, SecretsFilter) for f in handler.filters):
            handler.addFilter(secrets_filter)
    return secrets_filter
