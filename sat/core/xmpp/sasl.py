"""SASL authentication for the XMPP client: SCRAM mechanisms and a safer initializer.

Twisted only ships PLAIN, DIGEST-MD5 and ANONYMOUS. This module adds:

* :class:`ScramSHA256` and :class:`ScramSHA1` (RFC 5802, RFC 7677), implementing Twisted's
  :class:`~twisted.words.protocols.jabber.sasl_mechanisms.ISASLMechanism`. No channel
  binding is offered (GS2 header ``n,,``), so the ``-PLUS`` variants are never chosen.
* :class:`SatSASLInitializer`, a drop-in replacement for Twisted's
  :class:`~twisted.words.protocols.jabber.sasl.SASLInitiatingInitializer` which picks the
  strongest mechanism offered, refuses PLAIN on an unencrypted stream, verifies the SCRAM
  server signature carried by ``<success/>`` before resetting the stream, and turns every
  failure into :class:`sat.core.errors.AuthenticationFailed` with a human message.

Plug it into an authenticator's ``associateWithStream``::

    xs.initializers = [
        client.CheckVersionInitializer(xs),
        xmlstream.TLSInitiatingInitializer(xs, required=True, configurationForTLS=tls_options),
        SatSASLInitializer(xs, required=True, allowed_mechanisms=profile_mechanisms),
        client.BindInitializer(xs, required=True),
        client.SessionInitializer(xs, required=False),
    ]

or call :func:`replace_sasl_initializer` on a list built by someone else.

Passwords are never logged nor kept in ``repr``; salted passwords may be cached in memory
(keyed by a per-process keyed hash of the password, the salt and the iteration count) so
that reconnections do not repeat PBKDF2.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import logging
import secrets
import stringprep
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Iterable

from twisted.internet import defer, threads
from twisted.internet.interfaces import ISSLTransport
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.words.protocols.jabber import sasl as tw_sasl
from twisted.words.protocols.jabber import sasl_mechanisms, xmlstream
from twisted.words.xish import domish
from zope.interface import implementer

from sat.core.errors import AuthenticationFailed

__all__ = [
    "DEFAULT_MECHANISMS",
    "SaslPrepError",
    "ScramError",
    "ScramMechanism",
    "ScramSHA1",
    "ScramSHA256",
    "SatSASLInitializer",
    "clear_salted_password_cache",
    "escape_saslname",
    "is_stream_encrypted",
    "replace_sasl_initializer",
    "saslprep",
]

log = logging.getLogger(__name__)

NS_XMPP_SASL = tw_sasl.NS_XMPP_SASL

#: Mechanisms we may use, strongest first. PLAIN is only used on an encrypted stream.
DEFAULT_MECHANISMS: tuple[str, ...] = ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN")


class ScramError(AuthenticationFailed):
    """The SCRAM exchange failed (bad server data, server error or wrong signature)."""


class SaslPrepError(ScramError):
    """A string cannot be prepared with SASLprep (RFC 4013)."""


# --------------------------------------------------------------------------- SASLprep


def saslprep(text: str, allow_unassigned: bool = True) -> str:
    """Prepare ``text`` with the SASLprep profile of stringprep (RFC 4013, RFC 3454).

    :param allow_unassigned: treat ``text`` as a "query" (code points unassigned in
        Unicode 3.2 are allowed) rather than a "stored string". The default is the query
        mode: Python's :mod:`stringprep` tables are Unicode 3.2, where emoji and many recent
        characters are unassigned, and servers (Prosody) prepare passwords the same way.
    :raises SaslPrepError: on a prohibited character or a bidirectional rule violation.
    """
    # 1. mapping: non-ASCII spaces to SPACE, "commonly mapped to nothing" removed
    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else ch for ch in text if not stringprep.in_table_b1(ch)
    )
    # 2. normalisation: NFKC with the Unicode version stringprep is defined for
    normalized = unicodedata.ucd_3_2_0.normalize("NFKC", mapped)
    if not normalized:
        return normalized
    # 3. prohibited output
    prohibited = (
        stringprep.in_table_c12,
        stringprep.in_table_c21,
        stringprep.in_table_c22,
        stringprep.in_table_c3,
        stringprep.in_table_c4,
        stringprep.in_table_c5,
        stringprep.in_table_c6,
        stringprep.in_table_c7,
        stringprep.in_table_c8,
        stringprep.in_table_c9,
    )
    for ch in normalized:
        if any(check(ch) for check in prohibited):
            raise SaslPrepError(f"SASLprep: prohibited character U+{ord(ch):04X}")
        if not allow_unassigned and stringprep.in_table_a1(ch):
            raise SaslPrepError(f"SASLprep: unassigned character U+{ord(ch):04X}")
    # 4. bidirectional characters (RFC 3454 section 6)
    if any(stringprep.in_table_d1(ch) for ch in normalized):
        if any(stringprep.in_table_d2(ch) for ch in normalized):
            raise SaslPrepError("SASLprep: mixes right-to-left and left-to-right characters")
        if not (stringprep.in_table_d1(normalized[0]) and stringprep.in_table_d1(normalized[-1])):
            raise SaslPrepError(
                "SASLprep: right-to-left text must start and end with a right-to-left character"
            )
    return normalized


def escape_saslname(name: str) -> str:
    """Escape a prepared user name for the SCRAM ``n=`` attribute (RFC 5802 ``saslname``).

    ``=`` becomes ``=3D`` and ``,`` becomes ``=2C`` (``=`` first, so the escapes themselves
    are not escaped again).
    """
    return name.replace("=", "=3D").replace(",", "=2C")


def generate_nonce() -> str:
    """Return a fresh client nonce: 32 random bytes, URL-safe base64 (no ``,``)."""
    return secrets.token_urlsafe(32)


# --------------------------------------------------------------------------- salted password cache

_CACHE_MAX = 32
_cache_lock = threading.Lock()
_salted_cache: OrderedDict[tuple, bytes] = OrderedDict()
# per-process key, so the cache never holds a plain (dictionary-attackable) password hash
_cache_secret = secrets.token_bytes(32)


def _cache_key(hash_name: str, password: bytes, salt: bytes, iterations: int) -> tuple:
    tag = hmac.new(_cache_secret, password, hashlib.sha256).digest()
    return (hash_name, tag, salt, iterations)


def _cache_get(key: tuple) -> bytes | None:
    with _cache_lock:
        value = _salted_cache.get(key)
        if value is not None:
            _salted_cache.move_to_end(key)
        return value


def _cache_put(key: tuple, value: bytes) -> None:
    with _cache_lock:
        _salted_cache[key] = value
        _salted_cache.move_to_end(key)
        while len(_salted_cache) > _CACHE_MAX:
            _salted_cache.popitem(last=False)


def clear_salted_password_cache() -> None:
    """Forget every cached SCRAM salted password (e.g. after a password change)."""
    with _cache_lock:
        _salted_cache.clear()


def _pbkdf2(hash_name: str, password: bytes, salt: bytes, iterations: int) -> bytes:
    """SCRAM ``Hi()`` function: PBKDF2 with HMAC, output as long as the hash."""
    return hashlib.pbkdf2_hmac(hash_name, password, salt, iterations)


def _run_in_thread(func: Callable, *args) -> defer.Deferred:
    """Run ``func`` in the reactor thread pool (indirection kept for tests)."""
    return threads.deferToThread(func, *args)


# --------------------------------------------------------------------------- SCRAM


class _State(enum.Enum):
    INITIAL = "initial"
    SENT_CLIENT_FIRST = "sent-client-first"
    SENT_CLIENT_FINAL = "sent-client-final"
    DONE = "done"
    FAILED = "failed"


def _b64decode(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ScramError(f"SCRAM: the server sent an invalid base64 {what}") from None


def _parse_attributes(message: bytes, what: str) -> OrderedDict[str, str]:
    """Parse ``a=value,b=value`` (RFC 5802 section 5) into an ordered mapping."""
    try:
        text = message.decode("utf-8")
    except UnicodeDecodeError:
        raise ScramError(f"SCRAM: the {what} is not valid UTF-8") from None
    attributes: OrderedDict[str, str] = OrderedDict()
    for part in text.split(","):
        if len(part) < 2 or part[1] != "=" or not part[0].isascii() or not part[0].isalpha():
            raise ScramError(f"SCRAM: malformed {what}")
        attributes.setdefault(part[0], part[2:])
    return attributes


@implementer(sasl_mechanisms.ISASLMechanism)
class ScramMechanism:
    """SCRAM client (RFC 5802) without channel binding, parametrised by hash.

    Subclasses set :attr:`name` and :attr:`hash_name`. Responses are :class:`bytes`, as
    Twisted's SASL initializer base64-encodes them.

    :param username: the authentication identity (for XMPP, the JID's localpart).
    :param password: the password; it is SASLprep'ed, used once and then dropped.
    :param nonce: the client nonce (tests only); a random one by default.
    :param use_cache: reuse/keep the salted password in the module cache.
    :param min_iterations: lowest iteration count accepted from the server.
    :param max_iterations: highest iteration count accepted (guards against a server
        making us burn CPU).
    :param thread_threshold: from this iteration count on, :meth:`getResponseDeferred`
        computes PBKDF2 in a thread instead of blocking the reactor.
    """

    name: str = ""
    hash_name: str = ""

    def __init__(
        self,
        username: str,
        password: str,
        nonce: str | None = None,
        *,
        use_cache: bool = True,
        min_iterations: int = 4096,
        max_iterations: int = 1_000_000,
        thread_threshold: int = 100_000,
    ):
        if not self.name or not self.hash_name:
            raise TypeError("use ScramSHA256 or ScramSHA1, not ScramMechanism itself")
        self._username = escape_saslname(saslprep(username or ""))
        if not self._username:
            raise ScramError("SCRAM: empty user name")
        try:
            prepared = saslprep(password or "")
        except SaslPrepError:
            # do not say which character: it would leak part of the password
            raise SaslPrepError(
                "SCRAM: the password contains characters SASLprep forbids"
            ) from None
        if not prepared:
            raise ScramError("SCRAM: empty password")
        self._password: bytes | None = prepared.encode("utf-8")
        self.nonce = generate_nonce() if nonce is None else nonce
        if (
            not self.nonce
            or "," in self.nonce
            or not (self.nonce.isascii() and self.nonce.isprintable() and " " not in self.nonce)
        ):
            raise ValueError("SCRAM client nonce must be printable and contain no ','")
        self.use_cache = use_cache
        self.min_iterations = min_iterations
        self.max_iterations = max_iterations
        self.thread_threshold = thread_threshold
        self._state = _State.INITIAL
        self._client_first_bare = ""
        self._server_first = ""
        self._combined_nonce = ""
        self._salt = b""
        self._iterations = 0
        self._server_signature = b""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} user={self._username!r} state={self._state.value}>"

    # -- ISASLMechanism

    def getInitialResponse(self) -> bytes:
        if self._state is not _State.INITIAL:
            raise ScramError("SCRAM: exchange already started")
        self._client_first_bare = f"n={self._username},r={self.nonce}"
        self._state = _State.SENT_CLIENT_FIRST
        # GS2 header "n,,": no channel binding, no authorization identity
        return f"n,,{self._client_first_bare}".encode()

    def getResponse(self, challenge: bytes) -> bytes:
        """Answer server-first with client-final, or check server-final (returns ``b""``)."""
        try:
            if self._state is _State.SENT_CLIENT_FIRST:
                self._parse_server_first(challenge)
                salted = self._cached_salted_password()
                if salted is None:
                    salted = self._compute_salted_password()
                return self._client_final(salted)
            if self._state is _State.SENT_CLIENT_FINAL:
                self._check_server_final(challenge)
                return b""
        except BaseException:
            self._fail()
            raise
        raise ScramError(f"SCRAM: unexpected challenge in state {self._state.value}")

    # -- extensions used by SatSASLInitializer

    @property
    def complete(self) -> bool:
        """True once the server signature has been verified."""
        return self._state is _State.DONE

    def getResponseDeferred(self, challenge: bytes) -> defer.Deferred:
        """Like :meth:`getResponse`, but runs a costly PBKDF2 off the reactor thread."""
        if self._state is not _State.SENT_CLIENT_FIRST:
            return defer.maybeDeferred(self.getResponse, challenge)
        try:
            self._parse_server_first(challenge)
            salted = self._cached_salted_password()
        except BaseException:
            self._fail()
            return defer.fail()
        if salted is not None:
            return defer.maybeDeferred(self._client_final, salted)
        if self._iterations < self.thread_threshold:
            return defer.maybeDeferred(lambda: self._client_final(self._compute_salted_password()))
        password, self._password = self._password, None
        d = _run_in_thread(_pbkdf2, self.hash_name, password, self._salt, self._iterations)

        def computed(salted: bytes) -> bytes:
            if self.use_cache:
                _cache_put(self._key(password), salted)
            return self._client_final(salted)

        def failed(failure):
            self._fail()
            return failure

        d.addCallback(computed)
        d.addErrback(failed)
        return d

    def verifySuccess(self, additional_data: bytes | None) -> None:
        """Check the data of ``<success/>`` (server-final), before the stream is reset.

        :raises ScramError: the server signature is missing, wrong, or came too early.
        """
        if self._state is _State.DONE:
            # server-final already came as a challenge; RFC 6120 allows an empty success
            return
        if self._state is not _State.SENT_CLIENT_FINAL:
            self._fail()
            raise ScramError(
                "SCRAM: the server reported success before the exchange was complete"
                " (server signature mismatch)"
            )
        if not additional_data:
            self._fail()
            raise ScramError("SCRAM: the server did not send its signature")
        try:
            self._check_server_final(additional_data)
        except BaseException:
            self._fail()
            raise

    # -- internals

    def _fail(self) -> None:
        self._state = _State.FAILED
        self._password = None

    def _parse_server_first(self, challenge: bytes) -> None:
        attributes = _parse_attributes(challenge, "server-first message")
        if "m" in attributes:
            raise ScramError("SCRAM: the server requires an unsupported extension")
        if "e" in attributes:
            raise ScramError(f"SCRAM: the server reported an error: {attributes['e']}")
        try:
            nonce, salt_b64, iterations_text = attributes["r"], attributes["s"], attributes["i"]
        except KeyError as e:
            raise ScramError(f"SCRAM: server-first message lacks '{e.args[0]}='") from None
        if not nonce.startswith(self.nonce) or len(nonce) <= len(self.nonce):
            raise ScramError("SCRAM: the server nonce does not extend our client nonce")
        salt = _b64decode(salt_b64, "salt")
        if not salt:
            raise ScramError("SCRAM: the server sent an empty salt")
        if not iterations_text.isascii() or not iterations_text.isdigit():
            raise ScramError("SCRAM: the server sent an invalid iteration count")
        iterations = int(iterations_text)
        if iterations < self.min_iterations:
            raise ScramError(
                f"SCRAM: iteration count {iterations} is too low"
                f" (at least {self.min_iterations} required)"
            )
        if iterations > self.max_iterations:
            raise ScramError(
                f"SCRAM: iteration count {iterations} is too high"
                f" (at most {self.max_iterations} accepted)"
            )
        self._server_first = challenge.decode("utf-8")
        self._combined_nonce = nonce
        self._salt = salt
        self._iterations = iterations

    def _key(self, password: bytes) -> tuple:
        return _cache_key(self.hash_name, password, self._salt, self._iterations)

    def _cached_salted_password(self) -> bytes | None:
        if not self.use_cache or self._password is None:
            return None
        return _cache_get(self._key(self._password))

    def _compute_salted_password(self) -> bytes:
        password, self._password = self._password, None
        if password is None:
            raise ScramError("SCRAM: password already used")
        salted = _pbkdf2(self.hash_name, password, self._salt, self._iterations)
        if self.use_cache:
            _cache_put(self._key(password), salted)
        return salted

    def _hmac(self, key: bytes, message: bytes) -> bytes:
        return hmac.new(key, message, self.hash_name).digest()

    def _client_final(self, salted_password: bytes) -> bytes:
        self._password = None
        # "biws" is base64("n,,"): the GS2 header, no channel binding data
        without_proof = f"c=biws,r={self._combined_nonce}"
        auth_message = ",".join(
            (self._client_first_bare, self._server_first, without_proof)
        ).encode("utf-8")
        client_key = self._hmac(salted_password, b"Client Key")
        stored_key = hashlib.new(self.hash_name, client_key).digest()
        client_signature = self._hmac(stored_key, auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, client_signature, strict=True))
        server_key = self._hmac(salted_password, b"Server Key")
        self._server_signature = self._hmac(server_key, auth_message)
        self._state = _State.SENT_CLIENT_FINAL
        return f"{without_proof},p={base64.b64encode(proof).decode('ascii')}".encode("ascii")

    def _check_server_final(self, message: bytes) -> None:
        attributes = _parse_attributes(message, "server-final message")
        if "e" in attributes:
            raise ScramError(f"SCRAM: the server reported an error: {attributes['e']}")
        if "v" not in attributes:
            raise ScramError("SCRAM: server-final message lacks 'v='")
        signature = _b64decode(attributes["v"], "server signature")
        if not hmac.compare_digest(signature, self._server_signature):
            raise ScramError("SCRAM: server signature mismatch")
        self._state = _State.DONE


class ScramSHA256(ScramMechanism):
    """SCRAM-SHA-256 (RFC 7677)."""

    name = "SCRAM-SHA-256"
    hash_name = "sha256"


class ScramSHA1(ScramMechanism):
    """SCRAM-SHA-1 (RFC 5802)."""

    name = "SCRAM-SHA-1"
    hash_name = "sha1"


# --------------------------------------------------------------------------- initializer


def is_stream_encrypted(xs: xmlstream.XmlStream) -> bool:
    """Tell whether the transport under ``xs`` is TLS-protected.

    Covers STARTTLS on a TCP transport (Twisted marks it with :class:`ISSLTransport` and
    ``TLS = True``), direct TLS (the transport is a :class:`TLSMemoryBIOProtocol`), and
    an explicit ``xs.tls_active = True`` set by our own TLS set-up code.
    """
    if getattr(xs, "tls_active", False) is True:
        return True
    transport = getattr(xs, "transport", None)
    if transport is None:
        return False
    if ISSLTransport.providedBy(transport) or isinstance(transport, TLSMemoryBIOProtocol):
        return True
    return getattr(transport, "TLS", False) is True


_FAILURE_MESSAGES = {
    "aborted": "authentication aborted",
    "account-disabled": "account disabled",
    "credentials-expired": "credentials expired",
    "encryption-required": "the server requires an encrypted connection for this mechanism",
    "incorrect-encoding": "the server could not decode our authentication data",
    "invalid-authzid": "invalid authorization identity",
    "invalid-mechanism": "the server does not support this authentication mechanism",
    "malformed-request": "malformed authentication request",
    "mechanism-too-weak": "the server considers this authentication mechanism too weak",
    "not-authorized": "wrong JID or password",
    "temporary-auth-failure": "temporary authentication failure, try again later",
}


def _failure_error(element: domish.Element, mechanism: str | None) -> AuthenticationFailed:
    condition = None
    text = None
    for child in element.elements():
        if child.name == "text":
            text = str(child).strip() or None
        elif condition is None:
            condition = child.name
    human = _FAILURE_MESSAGES.get(condition or "", "authentication refused by the server")
    message = f"Authentication failed: {human}"
    if condition:
        message += f" ({condition})"
    if text:
        message += f": {text}"
    return AuthenticationFailed(message, condition=condition, text=text, mechanism=mechanism)


class SatSASLInitializer(tw_sasl.SASLInitiatingInitializer):
    """SASL initializer choosing SCRAM first and checking the server's signature.

    Credentials come from ``xs.authenticator.jid`` and ``xs.authenticator.password``, as for
    Twisted's initializer. A JID without localpart uses ANONYMOUS when offered.

    :param xs: the XML stream.
    :param required: fail when the server advertises no SASL feature.
    :param allowed_mechanisms: mechanism names this profile accepts (default: all of
        :data:`DEFAULT_MECHANISMS`); the preference order stays ours. PLAIN is never used
        on an unencrypted stream, whatever this says.
    :param use_cache: let SCRAM reuse the in-memory salted password on reconnection.

    The deferred returned by :meth:`start` fires with :data:`xmlstream.Reset` on success and
    fails with :class:`~sat.core.errors.AuthenticationFailed` otherwise (``details`` holds
    ``condition``, ``text`` and ``mechanism`` for ``<failure/>``).
    """

    allowed_mechanisms: tuple[str, ...] | None = None
    use_cache: bool = True
    mechanism = None

    def __init__(
        self,
        xs: xmlstream.XmlStream,
        required: bool = True,
        allowed_mechanisms: Iterable[str] | None = None,
        use_cache: bool = True,
    ):
        super().__init__(xs, required=required)
        if allowed_mechanisms is not None:
            self.allowed_mechanisms = tuple(m.upper() for m in allowed_mechanisms)
        self.use_cache = use_cache

    # -- mechanism choice

    def isEncrypted(self) -> bool:
        """Whether the stream is TLS-protected (override for exotic transports)."""
        return is_stream_encrypted(self.xmlstream)

    def setMechanism(self) -> None:
        authenticator = self.xmlstream.authenticator
        jid = authenticator.jid
        password = getattr(authenticator, "password", None)
        offered = tw_sasl.get_mechanisms(self.xmlstream)
        offered_text = ", ".join(offered) or "none"
        allowed = self.allowed_mechanisms

        if jid.user is None:
            if "ANONYMOUS" in offered and (allowed is None or "ANONYMOUS" in allowed):
                self.mechanism = sasl_mechanisms.Anonymous()
                return
            raise AuthenticationFailed(
                f"anonymous login requested but the server does not offer it"
                f" (offered: {offered_text})"
            )

        encrypted = self.isEncrypted()
        for name in DEFAULT_MECHANISMS:
            if name not in offered or (allowed is not None and name not in allowed):
                continue
            if name == "SCRAM-SHA-256":
                self.mechanism = ScramSHA256(jid.user, password, use_cache=self.use_cache)
            elif name == "SCRAM-SHA-1":
                self.mechanism = ScramSHA1(jid.user, password, use_cache=self.use_cache)
            elif name == "PLAIN":
                if not encrypted:
                    continue
                self.mechanism = sasl_mechanisms.Plain(None, jid.user, password)
            log.debug("SASL: using %s (offered: %s)", name, offered_text)
            return

        message = f"server offers no secure authentication mechanism (offered: {offered_text})"
        if allowed is not None:
            message += f"; allowed for this profile: {', '.join(allowed) or 'none'}"
        if "PLAIN" in offered and not encrypted:
            message += "; PLAIN is refused on an unencrypted stream"
        raise AuthenticationFailed(message, offered=offered)

    # -- exchange

    def start(self) -> defer.Deferred:
        try:
            self.setMechanism()
        except AuthenticationFailed:
            return defer.fail()
        except tw_sasl.SASLError as e:
            return defer.fail(AuthenticationFailed(f"SASL: {e}"))
        self._deferred = defer.Deferred()
        self.xmlstream.addObserver("/challenge", self.onChallenge)
        self.xmlstream.addOnetimeObserver("/success", self.onSuccess)
        self.xmlstream.addOnetimeObserver("/failure", self.onFailure)
        self.sendAuth(self.mechanism.getInitialResponse())
        return self._deferred

    def _finished(self) -> bool:
        return self._deferred is None or self._deferred.called

    def _removeObservers(self) -> None:
        self.xmlstream.removeObserver("/challenge", self.onChallenge)
        self.xmlstream.removeObserver("/success", self.onSuccess)
        self.xmlstream.removeObserver("/failure", self.onFailure)

    def _mechanismName(self) -> str | None:
        return getattr(self.mechanism, "name", None)

    def _abort(self, error: AuthenticationFailed) -> None:
        """Stop the exchange from our side (RFC 6120 section 6.4.4) and report ``error``."""
        if self._finished():
            return
        self._removeObservers()
        self.xmlstream.send(domish.Element((NS_XMPP_SASL, "abort")))
        self._deferred.errback(error)

    def onChallenge(self, element: domish.Element) -> None:
        if self._finished():
            return
        try:
            challenge = tw_sasl.fromBase64(str(element).strip())
        except tw_sasl.SASLIncorrectEncodingError:
            self._abort(AuthenticationFailed("SASL: the server sent a badly encoded challenge"))
            return
        get_deferred = getattr(self.mechanism, "getResponseDeferred", None)
        if get_deferred is not None:
            d = get_deferred(challenge)
        else:
            d = defer.maybeDeferred(self.mechanism.getResponse, challenge)
        d.addCallbacks(self._sendChallengeResponse, self._challengeFailed)

    def _sendChallengeResponse(self, data: bytes | None) -> None:
        if not self._finished():
            self.sendResponse(data or b"")

    def _challengeFailed(self, failure) -> None:
        if failure.check(AuthenticationFailed):
            error = failure.value
        else:
            log.error("SASL %s: unexpected error: %s", self._mechanismName(), failure.value)
            error = AuthenticationFailed(f"SASL {self._mechanismName()}: {failure.value}")
        self._abort(error)

    def onSuccess(self, success: domish.Element) -> None:
        if self._finished():
            return
        self._removeObservers()
        content = str(success).strip()
        try:
            data = tw_sasl.fromBase64(content) if content and content != "=" else None
            verify = getattr(self.mechanism, "verifySuccess", None)
            if verify is not None:
                verify(data)
        except Exception as e:
            if isinstance(e, AuthenticationFailed):
                error = e
            elif isinstance(e, tw_sasl.SASLIncorrectEncodingError):
                error = AuthenticationFailed("SASL: the server sent a badly encoded success")
            else:
                error = AuthenticationFailed(f"SASL {self._mechanismName()}: {e}")
            log.warning("SASL: the server's success is not trustworthy: %s", error.message)
            # the server believes we are authenticated, we do not trust it: end the stream
            transport = getattr(self.xmlstream, "transport", None)
            if transport is not None:
                self.xmlstream.sendFooter()
                transport.loseConnection()
            self._deferred.errback(error)
            return
        self.xmlstream.reset()
        self.xmlstream.sendHeader()
        self._deferred.callback(xmlstream.Reset)

    def onFailure(self, failure: domish.Element) -> None:
        if self._finished():
            return
        self._removeObservers()
        self._deferred.errback(_failure_error(failure, self._mechanismName()))


def replace_sasl_initializer(xs: xmlstream.XmlStream, **kwargs) -> SatSASLInitializer:
    """Put a :class:`SatSASLInitializer` in place of Twisted's one in ``xs.initializers``.

    Keeps the position and ``required`` flag of the replaced initializer; appends the new
    one when none is found. ``kwargs`` go to :class:`SatSASLInitializer`.
    """
    initializers = xs.initializers
    for index, init in enumerate(initializers):
        if isinstance(init, tw_sasl.SASLInitiatingInitializer):
            kwargs.setdefault("required", init.required)
            new = SatSASLInitializer(xs, **kwargs)
            initializers[index] = new
            return new
    new = SatSASLInitializer(xs, **kwargs)
    initializers.append(new)
    return new
