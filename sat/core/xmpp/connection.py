"""How a profile reaches its server: endpoints, TLS settings and error mapping.

Kept apart from the session logic so the rules are in one place:

* certificates are always verified, against the XMPP *domain* (RFC 6125),
  with the system trust store or a configured CA file; there is no switch to
  turn checking off;
* XEP-0368 direct TLS (``xmpps-client``) or STARTTLS on the plain port;
* low-level failures (DNS, refused port, TLS verification, timeouts) become
  distinct :mod:`sat.core.errors` exceptions with a message a person can act on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from twisted.internet import endpoints, error, ssl
from twisted.python import failure
from twisted.words.protocols.jabber import error as jabber_error
from twisted.words.protocols.jabber import sasl as jabber_sasl
from twisted.words.protocols.jabber import xmlstream

from sat.core import errors

DEFAULT_PORT = 5222
_PEM_RE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


@dataclass
class ConnectionSettings:
    """Where and how to connect; one per profile."""

    #: host to connect to; None means the JID's domain
    host: str | None = None
    #: port; None means 5222 (STARTTLS) or 5223 (direct TLS)
    port: int | None = None
    #: XEP-0368 direct TLS instead of STARTTLS
    direct_tls: bool = False
    #: PEM file with trusted CA certificates; None: the system trust store
    ca_file: str | None = None
    connect_timeout: float = 10.0
    #: whole stream set-up (TLS, SASL, bind) must finish within this
    init_timeout: float = 30.0
    stream_management: bool = True
    reconnect_initial_delay: float = 0.5
    reconnect_max_delay: float = 60.0

    def target(self, domain: str) -> tuple[str, int]:
        host = self.host or domain
        port = self.port or (5223 if self.direct_tls else DEFAULT_PORT)
        return host, port


def trust_root(ca_file: str | None):
    """The TLS trust root: the CAs in ``ca_file``, or the platform's store."""
    if not ca_file:
        return ssl.platformTrust()
    path = Path(ca_file).expanduser()
    try:
        data = path.read_bytes()
    except OSError as e:
        raise errors.ConfigError(f"cannot read CA file {path}: {e.strerror}") from e
    pems = _PEM_RE.findall(data)
    if not pems:
        raise errors.ConfigError(f"CA file {path} holds no PEM certificate")
    return ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(p) for p in pems])


def tls_options(domain: str, ca_file: str | None, direct: bool = False):
    """Client TLS options that verify the certificate against the XMPP domain."""
    return ssl.optionsForClientTLS(
        hostname=domain,
        trustRoot=trust_root(ca_file),
        acceptableProtocols=[b"xmpp-client"] if direct else None,
    )


def make_endpoint(reactor, domain: str, settings: ConnectionSettings):
    host, port = settings.target(domain)
    tcp = endpoints.HostnameEndpoint(reactor, host, port, timeout=settings.connect_timeout)
    if settings.direct_tls:
        return endpoints.wrapClientTLS(tls_options(domain, settings.ca_file, direct=True), tcp)
    return tcp


def _is_tls_verification_failure(value) -> bool:
    name = type(value).__name__
    if name in ("VerificationError", "CertificateError"):
        return True
    text = repr(value)
    return "certificate verify failed" in text or "VerificationError" in text


def map_failure(reason, domain: str, settings: ConnectionSettings) -> errors.SatError:
    """Turn whatever stopped a connection attempt into a clear SatError."""
    value = reason.value if isinstance(reason, failure.Failure) else reason
    host, port = settings.target(domain)
    if isinstance(value, errors.SatError):
        return value
    if isinstance(value, error.DNSLookupError):
        return errors.HostNotFound(f"cannot resolve the server's host name {host!r}")
    if isinstance(value, error.ConnectionRefusedError | error.NoRouteError):
        return errors.ConnectionRefused(
            f"nothing answers on {host} port {port} (connection refused: is the server down?)"
        )
    if isinstance(value, error.TimeoutError):
        return errors.Timeout(f"no answer from {host} port {port} within the connection timeout")
    if _is_tls_verification_failure(value):
        return errors.CertificateError(
            f"the TLS certificate of {host} port {port} is not valid for {domain!r} "
            f"or not signed by a trusted authority ({value})"
        )
    if isinstance(value, xmlstream.FeatureNotAdvertized | xmlstream.TLSRequired):
        return errors.TLSRequired(
            f"{domain} does not offer TLS on port {port}; refusing an unencrypted connection"
        )
    if isinstance(value, xmlstream.TLSFailed):
        return errors.CertificateError(f"{domain} refused to start TLS")
    if isinstance(value, jabber_sasl.SASLNoAcceptableMechanism):
        return errors.AuthenticationFailed(f"{domain} offers no authentication mechanism we accept")
    if isinstance(value, jabber_sasl.SASLAuthError):
        return errors.AuthenticationFailed(
            f"authentication refused by {domain}: {getattr(value, 'condition', '')}"
        )
    if isinstance(value, jabber_error.StreamError):
        cond = value.condition
        if cond in ("host-unknown", "improper-addressing"):
            return errors.HostNotFound(f"{host} does not serve the XMPP domain {domain!r}")
        return errors.ConnectionFailed(f"server closed the stream: {cond} {value.text or ''}")
    if isinstance(value, error.ConnectionDone | error.ConnectionLost):
        return errors.ConnectionFailed(f"connection to {host} port {port} closed ({value})")
    return errors.ConnectionFailed(f"connection to {host} port {port} failed: {value}")
