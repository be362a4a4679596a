"""SCRAM mechanisms and the SASL initializer, on in-memory XML streams."""

import base64

import pytest
from twisted.internet import defer
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.testing import StringTransport
from twisted.python import failure
from twisted.words.protocols.jabber import client, sasl_mechanisms, xmlstream
from twisted.words.protocols.jabber import sasl as tw_sasl
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from zope.interface import directlyProvides
from zope.interface.verify import verifyObject

from sat.core.errors import AuthenticationFailed
from sat.core.xmpp import sasl

NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"

# RFC 5802 section 5
RFC5802_NONCE = "fyko+d2lbbFgONRv9qkxdawL"
RFC5802_CLIENT_FIRST = b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"
RFC5802_SERVER_FIRST = b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
RFC5802_CLIENT_FINAL = (
    b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
)
RFC5802_SERVER_FINAL = b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ="

# RFC 7677 section 3
RFC7677_NONCE = "rOprNGfwEbeRWgbNEkqO"
RFC7677_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC7677_SERVER_FIRST = (
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
RFC7677_CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC7677_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


@pytest.fixture(autouse=True)
def _fresh_cache():
    sasl.clear_salted_password_cache()
    yield
    sasl.clear_salted_password_cache()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def server_first(nonce="fyko+d2lbbFgONRv9qkxdawLSERVER", salt=b"saltsalt", iterations=4096):
    return f"r={nonce},s={b64(salt)},i={iterations}".encode()


# --------------------------------------------------------------------------- RFC vectors


@pytest.mark.parametrize(
    "cls, nonce, client_first, server_first_msg, client_final, server_final",
    [
        (
            sasl.ScramSHA1,
            RFC5802_NONCE,
            RFC5802_CLIENT_FIRST,
            RFC5802_SERVER_FIRST,
            RFC5802_CLIENT_FINAL,
            RFC5802_SERVER_FINAL,
        ),
        (
            sasl.ScramSHA256,
            RFC7677_NONCE,
            RFC7677_CLIENT_FIRST,
            RFC7677_SERVER_FIRST,
            RFC7677_CLIENT_FINAL,
            RFC7677_SERVER_FINAL,
        ),
    ],
    ids=["rfc5802-sha1", "rfc7677-sha256"],
)
class TestRFCVectors:
    def test_final_in_success(
        self, cls, nonce, client_first, server_first_msg, client_final, server_final
    ):
        mech = cls("user", "pencil", nonce=nonce)
        assert mech.getInitialResponse() == client_first
        assert mech.getResponse(server_first_msg) == client_final
        assert not mech.complete
        mech.verifySuccess(server_final)
        assert mech.complete

    def test_final_as_challenge(
        self, cls, nonce, client_first, server_first_msg, client_final, server_final
    ):
        mech = cls("user", "pencil", nonce=nonce)
        mech.getInitialResponse()
        mech.getResponse(server_first_msg)
        assert mech.getResponse(server_final) == b""
        assert mech.complete
        mech.verifySuccess(None)  # empty <success/> after the challenge is fine

    def test_deferred_api_same_result(
        self, cls, nonce, client_first, server_first_msg, client_final, server_final
    ):
        mech = cls("user", "pencil", nonce=nonce)
        mech.getInitialResponse()
        results = []
        mech.getResponseDeferred(server_first_msg).addCallback(results.append)
        assert results == [client_final]

    def test_forged_server_signature(
        self, cls, nonce, client_first, server_first_msg, client_final, server_final
    ):
        mech = cls("user", "pencil", nonce=nonce)
        mech.getInitialResponse()
        mech.getResponse(server_first_msg)
        forged = b"v=" + base64.b64encode(b"\0" * len(base64.b64decode(server_final[2:])))
        with pytest.raises(AuthenticationFailed, match="server signature mismatch"):
            mech.verifySuccess(forged)
        assert not mech.complete

    def test_wrong_password_gives_other_proof(
        self, cls, nonce, client_first, server_first_msg, client_final, server_final
    ):
        mech = cls("user", "pencil2", nonce=nonce)
        mech.getInitialResponse()
        assert mech.getResponse(server_first_msg) != client_final


def test_implements_isaslmechanism():
    for cls in (sasl.ScramSHA1, sasl.ScramSHA256):
        assert verifyObject(sasl_mechanisms.ISASLMechanism, cls("user", "pencil"))
    assert sasl.ScramSHA256.name == "SCRAM-SHA-256"
    assert sasl.ScramSHA1.name == "SCRAM-SHA-1"


def test_base_class_not_usable():
    with pytest.raises(TypeError):
        sasl.ScramMechanism("user", "pencil")


# --------------------------------------------------------------------------- server data checks


def started(cls=sasl.ScramSHA1, **kw):
    mech = cls("user", "pencil", nonce=RFC5802_NONCE, **kw)
    mech.getInitialResponse()
    return mech


def test_bad_server_nonce():
    mech = started()
    with pytest.raises(AuthenticationFailed, match="nonce"):
        mech.getResponse(server_first(nonce="attackerchosen" + RFC5802_NONCE))


def test_server_nonce_must_extend_client_nonce():
    mech = started()
    with pytest.raises(AuthenticationFailed, match="nonce"):
        mech.getResponse(server_first(nonce=RFC5802_NONCE))


def test_low_iteration_count():
    mech = started()
    with pytest.raises(AuthenticationFailed, match="iteration count 4095 is too low"):
        mech.getResponse(server_first(iterations=4095))


def test_absurd_iteration_count():
    mech = started()
    with pytest.raises(AuthenticationFailed, match="too high"):
        mech.getResponse(server_first(iterations=1_000_001))


@pytest.mark.parametrize("iterations", ["-4096", "4k", "", "٤٠٩٦"])
def test_invalid_iteration_count(iterations):
    mech = started()
    with pytest.raises(AuthenticationFailed):
        mech.getResponse(f"r={RFC5802_NONCE}x,s=c2FsdA==,i={iterations}".encode())


@pytest.mark.parametrize(
    "message",
    [
        b"r=fyko+d2lbbFgONRv9qkxdawLx,s=c2FsdA==",  # no i=
        b"r=fyko+d2lbbFgONRv9qkxdawLx,i=4096",  # no s=
        b"s=c2FsdA==,i=4096",  # no r=
        b"r=fyko+d2lbbFgONRv9qkxdawLx,s=*notbase64*,i=4096",
        b"r=fyko+d2lbbFgONRv9qkxdawLx,s=,i=4096",  # empty salt
        b"garbage",
        b"\xff\xfe",
        b"",
    ],
)
def test_malformed_server_first(message):
    mech = started()
    with pytest.raises(AuthenticationFailed):
        mech.getResponse(message)


def test_mandatory_extension_refused():
    mech = started()
    with pytest.raises(AuthenticationFailed, match="extension"):
        mech.getResponse(b"m=ext," + RFC5802_SERVER_FIRST)


def test_server_first_extensions_ignored():
    mech = started()
    # the extension is part of AuthMessage, so the proof differs from the RFC one
    response = mech.getResponse(RFC5802_SERVER_FIRST + b",x=future")
    assert response.startswith(RFC5802_CLIENT_FINAL.split(b",p=")[0] + b",p=")
    assert response != RFC5802_CLIENT_FINAL


def test_server_error_in_server_final():
    mech = started()
    mech.getResponse(RFC5802_SERVER_FIRST)
    with pytest.raises(AuthenticationFailed, match="invalid-proof"):
        mech.verifySuccess(b"e=invalid-proof")
    assert not mech.complete


def test_server_error_as_challenge():
    mech = started()
    mech.getResponse(RFC5802_SERVER_FIRST)
    with pytest.raises(AuthenticationFailed, match="other-error"):
        mech.getResponse(b"e=other-error")


def test_server_final_without_verifier():
    mech = started()
    mech.getResponse(RFC5802_SERVER_FIRST)
    with pytest.raises(AuthenticationFailed, match="lacks 'v='"):
        mech.verifySuccess(b"x=1")


def test_success_without_signature():
    mech = started()
    mech.getResponse(RFC5802_SERVER_FIRST)
    with pytest.raises(AuthenticationFailed, match="did not send its signature"):
        mech.verifySuccess(None)


def test_success_too_early():
    mech = started()
    with pytest.raises(AuthenticationFailed, match="server signature mismatch"):
        mech.verifySuccess(RFC5802_SERVER_FINAL)


def test_no_second_attempt_after_failure():
    mech = started()
    with pytest.raises(AuthenticationFailed):
        mech.getResponse(server_first(iterations=1))
    with pytest.raises(AuthenticationFailed):
        mech.getResponse(RFC5802_SERVER_FIRST)


def test_unexpected_challenge_after_completion():
    mech = started()
    mech.getResponse(RFC5802_SERVER_FIRST)
    mech.getResponse(RFC5802_SERVER_FINAL)
    with pytest.raises(AuthenticationFailed):
        mech.getResponse(RFC5802_SERVER_FINAL)


def test_initial_response_only_once():
    mech = started()
    with pytest.raises(AuthenticationFailed):
        mech.getInitialResponse()


def test_iteration_limits_configurable():
    mech = started(min_iterations=10000)
    with pytest.raises(AuthenticationFailed, match="too low"):
        mech.getResponse(RFC5802_SERVER_FIRST)


# --------------------------------------------------------------------------- names and nonces


@pytest.mark.parametrize(
    "username, expected",
    [
        ("user", "user"),
        ("us,er", "us=2Cer"),
        ("us=er", "us=3Der"),
        ("a=2C,b", "a=3D2C=2Cb"),
        ("I\u00adX", "IX"),  # soft hyphen is mapped to nothing
        ("\u2168", "IX"),  # ROMAN NUMERAL NINE, NFKC
        ("a\u00a0b", "a b"),  # non-ASCII space mapped to SPACE
    ],
)
def test_username_preparation(username, expected):
    mech = sasl.ScramSHA256(username, "pencil", nonce="abc")
    assert mech.getInitialResponse() == f"n,,n={expected},r=abc".encode()


def test_escape_saslname():
    assert sasl.escape_saslname("=,") == "=3D=2C"


@pytest.mark.parametrize(
    "text",
    ["a\u0007b", "\ufffd", "a\u200eb", "\u0627a\u0627", "\u06271"],
)
def test_saslprep_rejects(text):
    with pytest.raises(sasl.SaslPrepError):
        sasl.saslprep(text)


def test_saslprep_rtl_ok():
    assert sasl.saslprep("\u0627\u0031\u0628") == "\u0627\u0031\u0628"


def test_saslprep_unassigned():
    text = "pass\U0001f600"  # emoji: unassigned in Unicode 3.2
    assert sasl.saslprep(text) == text
    with pytest.raises(sasl.SaslPrepError):
        sasl.saslprep(text, allow_unassigned=False)


def test_password_is_saslpreped():
    a = started(cls=sasl.ScramSHA256, use_cache=False)
    b = sasl.ScramSHA256("user", "pen\u00adcil", nonce=RFC5802_NONCE, use_cache=False)
    b.getInitialResponse()
    msg = server_first()
    assert a.getResponse(msg) == b.getResponse(msg)


def test_bad_password_does_not_leak_character():
    with pytest.raises(AuthenticationFailed) as info:
        sasl.ScramSHA1("user", "secret\u0007")
    assert "U+" not in info.value.message
    assert "secret" not in info.value.message


def test_empty_password_or_user():
    with pytest.raises(AuthenticationFailed, match="empty password"):
        sasl.ScramSHA1("user", "")
    with pytest.raises(AuthenticationFailed, match="empty password"):
        sasl.ScramSHA1("user", None)
    with pytest.raises(AuthenticationFailed, match="empty user"):
        sasl.ScramSHA1("", "pencil")


def test_random_nonce():
    first = sasl.ScramSHA256("user", "pencil")
    second = sasl.ScramSHA256("user", "pencil")
    assert first.nonce != second.nonce
    assert len(first.nonce) >= 32
    assert "," not in first.nonce and first.nonce.isascii()
    assert first.getInitialResponse() == f"n,,n=user,r={first.nonce}".encode()


@pytest.mark.parametrize("nonce", ["a,b", "", "a b", "é"])
def test_invalid_injected_nonce(nonce):
    with pytest.raises(ValueError):
        sasl.ScramSHA1("user", "pencil", nonce=nonce)


def test_repr_hides_password():
    mech = sasl.ScramSHA1("user", "pencil")
    assert "pencil" not in repr(mech)
    mech.getInitialResponse()
    mech.getResponse(server_first(nonce=mech.nonce + "x"))
    assert mech._password is None  # dropped once the salted password is known


# --------------------------------------------------------------------------- salted password cache


@pytest.fixture
def pbkdf2_calls(monkeypatch):
    calls = []
    real = sasl._pbkdf2

    def counting(*args):
        calls.append(args[2:])
        return real(*args)

    monkeypatch.setattr(sasl, "_pbkdf2", counting)
    return calls


def run_exchange(password="pencil", cls=sasl.ScramSHA1, **kw):
    mech = cls("user", password, nonce=RFC5802_NONCE, **kw)
    mech.getInitialResponse()
    return mech.getResponse(RFC5802_SERVER_FIRST)


def test_cache_avoids_second_pbkdf2(pbkdf2_calls):
    assert run_exchange() == RFC5802_CLIENT_FINAL
    assert run_exchange() == RFC5802_CLIENT_FINAL
    assert len(pbkdf2_calls) == 1


def test_cache_keyed_by_password_and_hash(pbkdf2_calls):
    run_exchange()
    assert run_exchange("other") != RFC5802_CLIENT_FINAL
    run_exchange(cls=sasl.ScramSHA256)
    assert len(pbkdf2_calls) == 3


def test_cache_disabled(pbkdf2_calls):
    run_exchange(use_cache=False)
    run_exchange(use_cache=False)
    assert len(pbkdf2_calls) == 2


def test_cache_does_not_hold_password():
    run_exchange()
    for key, value in sasl._salted_cache.items():
        assert b"pencil" not in repr(key).encode()
        assert value != b"pencil"


def test_cache_cleared(pbkdf2_calls):
    run_exchange()
    sasl.clear_salted_password_cache()
    run_exchange()
    assert len(pbkdf2_calls) == 2


def test_costly_pbkdf2_runs_in_thread(monkeypatch):
    threaded = []

    def fake_thread(func, *args):
        threaded.append(args[-1])
        return defer.maybeDeferred(func, *args)

    monkeypatch.setattr(sasl, "_run_in_thread", fake_thread)
    mech = sasl.ScramSHA1("user", "pencil", nonce=RFC5802_NONCE, thread_threshold=4096)
    mech.getInitialResponse()
    results = []
    mech.getResponseDeferred(RFC5802_SERVER_FIRST).addCallback(results.append)
    assert threaded == [4096]
    assert results == [RFC5802_CLIENT_FINAL]
    mech.verifySuccess(RFC5802_SERVER_FINAL)
    # second exchange comes from the cache, no thread
    mech = sasl.ScramSHA1("user", "pencil", nonce=RFC5802_NONCE, thread_threshold=4096)
    mech.getInitialResponse()
    mech.getResponseDeferred(RFC5802_SERVER_FIRST).addCallback(results.append)
    assert threaded == [4096]
    assert results[-1] == RFC5802_CLIENT_FINAL


def test_deferred_api_reports_errors():
    mech = started()
    errors = []
    mech.getResponseDeferred(server_first(iterations=12)).addErrback(errors.append)
    assert errors and errors[0].check(AuthenticationFailed)


# --------------------------------------------------------------------------- initializer


class _Authenticator(xmlstream.ConnectAuthenticator):
    namespace = "jabber:client"

    def __init__(self, jid, password, init_kwargs, init_class=sasl.SatSASLInitializer):
        super().__init__(jid.host)
        self.init_class = init_class
        self.jid = jid
        self.password = password
        self.init_kwargs = init_kwargs

    def associateWithStream(self, xs):
        super().associateWithStream(xs)
        self.sasl_init = self.init_class(xs, **self.init_kwargs)
        xs.initializers = [self.sasl_init]


class Harness:
    """A client XmlStream on a StringTransport, fed with server XML."""

    def __init__(
        self,
        jid="user@example.org",
        password="pencil",
        tls=False,
        init_class=sasl.SatSASLInitializer,
        **init_kwargs,
    ):
        self.authenticator = _Authenticator(JID(jid), password, init_kwargs, init_class)
        self.xs = xmlstream.XmlStream(self.authenticator)
        self.transport = StringTransport()
        if tls:
            directlyProvides(self.transport, ISSLTransport)
        self.sent = []
        real_send = self.xs.send

        def send(obj):
            self.sent.append(obj)
            real_send(obj)

        self.xs.send = send
        self.authd = []
        self.failures = []
        self.xs.addObserver(xmlstream.STREAM_AUTHD_EVENT, self.authd.append)
        self.xs.addObserver(xmlstream.INIT_FAILED_EVENT, self.failures.append)
        self.xs.makeConnection(self.transport)
        self.sent.clear()  # our stream header

    def feed(self, data: str) -> None:
        self.xs.dataReceived(data.encode("utf-8"))

    def start(self, *mechanisms: str) -> None:
        self.feed(
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
            " from='example.org' id='s1' version='1.0'>"
        )
        items = "".join(f"<mechanism>{m}</mechanism>" for m in mechanisms)
        self.feed(
            f"<stream:features><mechanisms xmlns='{NS_SASL}'>{items}</mechanisms></stream:features>"
        )

    def elements(self) -> list[domish.Element]:
        return [e for e in self.sent if isinstance(e, domish.Element)]

    def last(self) -> domish.Element:
        return self.elements()[-1]

    def last_payload(self) -> bytes:
        return base64.b64decode(str(self.last()))

    def server(self, name: str, payload: bytes | None = None, inner: str = "") -> None:
        content = b64(payload) if payload is not None else ""
        self.feed(f"<{name} xmlns='{NS_SASL}'>{content}{inner}</{name}>")

    @property
    def error(self) -> AuthenticationFailed:
        assert len(self.failures) == 1, self.failures
        reason = self.failures[0]
        assert isinstance(reason, failure.Failure)
        assert reason.check(AuthenticationFailed), reason
        return reason.value

    @property
    def header_sent(self) -> bool:
        return any(isinstance(s, str) and s.startswith("<stream:stream") for s in self.sent)


@pytest.fixture
def fixed_nonce(monkeypatch):
    def use(nonce):
        monkeypatch.setattr(sasl, "generate_nonce", lambda: nonce)

    return use


def test_initializer_rfc5802_full_exchange(fixed_nonce):
    fixed_nonce(RFC5802_NONCE)
    h = Harness()
    h.start("SCRAM-SHA-1", "PLAIN", "DIGEST-MD5")
    auth = h.last()
    assert auth.name == "auth" and auth.uri == NS_SASL
    assert auth["mechanism"] == "SCRAM-SHA-1"
    assert h.last_payload() == RFC5802_CLIENT_FIRST
    h.server("challenge", RFC5802_SERVER_FIRST)
    assert h.last().name == "response"
    assert h.last_payload() == RFC5802_CLIENT_FINAL
    assert not h.header_sent
    h.server("success", RFC5802_SERVER_FINAL)
    assert h.failures == []
    assert h.header_sent  # stream reset and restarted
    assert h.xs.initializers == []  # initializer done (returned Reset)
    assert not h.transport.disconnecting


def test_initializer_prefers_sha256(fixed_nonce):
    fixed_nonce(RFC7677_NONCE)
    h = Harness(tls=True)
    h.start("PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-256-PLUS")
    assert h.last()["mechanism"] == "SCRAM-SHA-256"
    assert h.last_payload() == RFC7677_CLIENT_FIRST
    h.server("challenge", RFC7677_SERVER_FIRST)
    assert h.last_payload() == RFC7677_CLIENT_FINAL
    h.server("success", RFC7677_SERVER_FINAL)
    assert h.failures == [] and h.header_sent


def test_initializer_server_final_as_challenge(fixed_nonce):
    fixed_nonce(RFC5802_NONCE)
    h = Harness()
    h.start("SCRAM-SHA-1")
    h.server("challenge", RFC5802_SERVER_FIRST)
    h.server("challenge", RFC5802_SERVER_FINAL)
    response = h.last()
    assert response.name == "response" and str(response) == ""
    h.server("success")
    assert h.failures == [] and h.header_sent


def test_initializer_forged_success(fixed_nonce):
    fixed_nonce(RFC5802_NONCE)
    h = Harness()
    h.start("SCRAM-SHA-1")
    h.server("challenge", RFC5802_SERVER_FIRST)
    h.server("success", b"v=" + base64.b64encode(b"x" * 20))
    assert "server signature mismatch" in h.error.message
    assert not h.header_sent
    assert "</stream:stream>" in h.sent
    assert h.transport.disconnecting


def test_initializer_success_without_signature(fixed_nonce):
    fixed_nonce(RFC5802_NONCE)
    h = Harness()
    h.start("SCRAM-SHA-1")
    h.server("challenge", RFC5802_SERVER_FIRST)
    h.server("success")
    assert "signature" in h.error.message
    assert not h.header_sent


def test_initializer_success_before_exchange():
    h = Harness()
    h.start("SCRAM-SHA-256")
    h.server("success")
    assert "server signature mismatch" in h.error.message
    assert not h.header_sent


def test_initializer_success_bad_base64(fixed_nonce):
    fixed_nonce(RFC5802_NONCE)
    h = Harness()
    h.start("SCRAM-SHA-1")
    h.server("challenge", RFC5802_SERVER_FIRST)
    h.feed(f"<success xmlns='{NS_SASL}'>!!!</success>")
    assert "badly encoded" in h.error.message
    assert not h.header_sent


def test_initializer_bad_nonce_aborts():
    h = Harness()
    h.start("SCRAM-SHA-256")
    h.server("challenge", server_first(nonce="notournonce"))
    assert h.last().name == "abort"
    assert "nonce" in h.error.message
    # the server's answer to <abort/> is ignored
    h.server("failure", inner="<aborted/>")
    assert len(h.failures) == 1


def test_initializer_low_iterations_aborts():
    h = Harness()
    h.start("SCRAM-SHA-1")
    nonce = h.last_payload().decode().split("r=")[1]
    h.server("challenge", server_first(nonce=nonce + "srv", iterations=1000))
    assert h.last().name == "abort"
    assert "too low" in h.error.message


def test_initializer_bad_base64_challenge():
    h = Harness()
    h.start("SCRAM-SHA-1")
    h.feed(f"<challenge xmlns='{NS_SASL}'>*</challenge>")
    assert h.last().name == "abort"
    assert "badly encoded" in h.error.message


def test_initializer_plain_refused_without_tls():
    h = Harness()
    h.start("PLAIN", "DIGEST-MD5")
    message = h.error.message
    assert "server offers no secure authentication mechanism" in message
    assert "offered: PLAIN, DIGEST-MD5" in message
    assert "unencrypted" in message
    assert h.elements() == []  # nothing sent, password never left


def test_initializer_plain_with_tls():
    h = Harness(tls=True)
    h.start("PLAIN")
    auth = h.last()
    assert auth["mechanism"] == "PLAIN"
    assert h.last_payload() == b"\0user\0pencil"
    h.server("success")
    assert h.failures == [] and h.header_sent


def test_initializer_plain_with_starttls_flag():
    h = Harness()
    h.transport.TLS = True  # what Twisted's startTLS sets on TCP transports
    h.start("PLAIN")
    assert h.last()["mechanism"] == "PLAIN"


def test_initializer_plus_only_refused():
    h = Harness(tls=True)
    h.start("SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS")
    assert "no secure authentication mechanism" in h.error.message


def test_initializer_no_mechanisms():
    h = Harness(tls=True)
    h.start()
    assert "offered: none" in h.error.message


def test_initializer_allowed_mechanisms():
    h = Harness(allowed_mechanisms=["scram-sha-1"])
    h.start("SCRAM-SHA-256", "SCRAM-SHA-1")
    assert h.last()["mechanism"] == "SCRAM-SHA-1"


def test_initializer_allowed_mechanisms_excludes_all():
    h = Harness(allowed_mechanisms=["PLAIN"])
    h.start("SCRAM-SHA-256", "PLAIN")
    message = h.error.message
    assert "allowed for this profile: PLAIN" in message
    assert "unencrypted" in message


def test_initializer_allowed_mechanisms_class_attribute():
    class ShaOneOnly(sasl.SatSASLInitializer):
        allowed_mechanisms = ("SCRAM-SHA-1",)

    h = Harness(init_class=ShaOneOnly)
    h.start("SCRAM-SHA-256", "SCRAM-SHA-1")
    assert h.last()["mechanism"] == "SCRAM-SHA-1"


def test_initializer_anonymous():
    h = Harness(jid="example.org", password=None)
    h.start("ANONYMOUS", "SCRAM-SHA-1")
    assert h.last()["mechanism"] == "ANONYMOUS"
    h.server("success")
    assert h.failures == [] and h.header_sent


def test_initializer_anonymous_not_offered():
    h = Harness(jid="example.org", password=None)
    h.start("SCRAM-SHA-1")
    assert "anonymous" in h.error.message


def test_initializer_empty_password():
    h = Harness(password="")
    h.start("SCRAM-SHA-1")
    assert "empty password" in h.error.message
    assert h.elements() == []


@pytest.mark.parametrize(
    "inner, expected",
    [
        ("<not-authorized/>", "wrong JID or password (not-authorized)"),
        ("<account-disabled/>", "account disabled (account-disabled)"),
        ("<credentials-expired/>", "credentials expired (credentials-expired)"),
        ("<temporary-auth-failure/>", "try again later (temporary-auth-failure)"),
        ("<encryption-required/>", "encrypted connection"),
        ("<mechanism-too-weak/>", "too weak (mechanism-too-weak)"),
        ("<some-new-condition/>", "refused by the server (some-new-condition)"),
        ("", "refused by the server"),
    ],
)
def test_initializer_failure_mapping(inner, expected):
    h = Harness()
    h.start("SCRAM-SHA-256")
    h.server("failure", inner=inner)
    assert expected in h.error.message
    assert h.error.message.startswith("Authentication failed: ")
    assert not h.header_sent


def test_initializer_failure_with_text():
    h = Harness()
    h.start("SCRAM-SHA-256")
    h.server(
        "failure", inner="<text xml:lang='en'>Your account is locked</text><account-disabled/>"
    )
    error = h.error
    assert error.message == (
        "Authentication failed: account disabled (account-disabled): Your account is locked"
    )
    assert error.details == {
        "condition": "account-disabled",
        "text": "Your account is locked",
        "mechanism": "SCRAM-SHA-256",
    }


def test_initializer_failure_after_challenge(fixed_nonce):
    fixed_nonce(RFC5802_NONCE)
    h = Harness()
    h.start("SCRAM-SHA-1")
    h.server("challenge", RFC5802_SERVER_FIRST)
    h.server("failure", b"e=invalid-proof", inner="<not-authorized/>")
    assert "wrong JID or password" in h.error.message
    # observers are gone: a late success must not reset the stream
    h.server("success", RFC5802_SERVER_FINAL)
    assert not h.header_sent and len(h.failures) == 1


def test_initializer_threaded_pbkdf2_then_failure(monkeypatch, fixed_nonce):
    """A failure arriving while PBKDF2 runs in a thread wins; no late response is sent."""
    fixed_nonce(RFC5802_NONCE)
    pending = []

    def fake_thread(func, *args):
        d = defer.Deferred()
        pending.append((d, func, args))
        return d

    monkeypatch.setattr(sasl, "_run_in_thread", fake_thread)
    h = Harness()
    h.start("SCRAM-SHA-1")
    h.authenticator.sasl_init.mechanism.thread_threshold = 4096
    h.server("challenge", RFC5802_SERVER_FIRST)
    assert len(pending) == 1 and h.last().name == "auth"
    h.server("failure", inner="<temporary-auth-failure/>")
    d, func, args = pending[0]
    d.callback(func(*args))
    assert h.last().name == "auth"  # no response after the failure
    assert "temporary" in h.error.message


def test_initializer_threaded_pbkdf2_success(monkeypatch, fixed_nonce):
    fixed_nonce(RFC5802_NONCE)
    pending = []

    def fake_thread(func, *args):
        d = defer.Deferred()
        pending.append((d, func, args))
        return d

    monkeypatch.setattr(sasl, "_run_in_thread", fake_thread)
    h = Harness()
    h.start("SCRAM-SHA-1")
    h.authenticator.sasl_init.mechanism.thread_threshold = 4096
    h.server("challenge", RFC5802_SERVER_FIRST)
    d, func, args = pending[0]
    d.callback(func(*args))
    assert h.last_payload() == RFC5802_CLIENT_FINAL
    h.server("success", RFC5802_SERVER_FINAL)
    assert h.failures == [] and h.header_sent


def test_initializer_restart_after_failure(fixed_nonce):
    """As Twisted documents: set a new password and call initializeStream again."""
    fixed_nonce(RFC5802_NONCE)
    h = Harness(password="wrong")
    h.start("SCRAM-SHA-1")
    h.server("failure", inner="<not-authorized/>")
    assert "wrong JID or password" in h.error.message
    h.authenticator.password = "pencil"
    h.authenticator.initializeStream()
    assert h.last()["mechanism"] == "SCRAM-SHA-1"
    h.server("challenge", RFC5802_SERVER_FIRST)
    assert h.last_payload() == RFC5802_CLIENT_FINAL
    h.server("success", RFC5802_SERVER_FINAL)
    assert h.header_sent and len(h.failures) == 1


# --------------------------------------------------------------------------- helpers


def test_is_stream_encrypted():
    xs = xmlstream.XmlStream(xmlstream.Authenticator())
    assert not sasl.is_stream_encrypted(xs)  # no transport yet
    transport = StringTransport()
    xs.transport = transport
    assert not sasl.is_stream_encrypted(xs)
    directlyProvides(transport, ISSLTransport)
    assert sasl.is_stream_encrypted(xs)


def test_is_stream_encrypted_flag():
    xs = xmlstream.XmlStream(xmlstream.Authenticator())
    xs.transport = StringTransport()
    xs.tls_active = False
    assert not sasl.is_stream_encrypted(xs)
    xs.tls_active = True  # set by sat.core.xmpp.client after STARTTLS / direct TLS
    assert sasl.is_stream_encrypted(xs)


def test_is_stream_encrypted_direct_tls():
    from twisted.internet.ssl import optionsForClientTLS
    from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol

    xs = xmlstream.XmlStream(xmlstream.Authenticator())
    factory = TLSMemoryBIOFactory(optionsForClientTLS("example.org"), True, None)
    xs.transport = TLSMemoryBIOProtocol(factory, xs)
    assert sasl.is_stream_encrypted(xs)


def test_replace_sasl_initializer():
    authenticator = client.XMPPAuthenticator(JID("user@example.org"), "pencil")
    xs = xmlstream.XmlStream(authenticator)
    authenticator.associateWithStream(xs)
    old = [i for i in xs.initializers if isinstance(i, tw_sasl.SASLInitiatingInitializer)]
    assert len(old) == 1
    position = xs.initializers.index(old[0])
    new = sasl.replace_sasl_initializer(xs, allowed_mechanisms=["SCRAM-SHA-256"])
    assert xs.initializers[position] is new
    assert isinstance(new, sasl.SatSASLInitializer)
    assert new.required is True
    assert new.allowed_mechanisms == ("SCRAM-SHA-256",)
    assert old[0] not in xs.initializers


def test_replace_sasl_initializer_appends():
    xs = xmlstream.XmlStream(xmlstream.Authenticator())
    xs.initializers = []
    new = sasl.replace_sasl_initializer(xs)
    assert xs.initializers == [new]
    assert new.required is True
