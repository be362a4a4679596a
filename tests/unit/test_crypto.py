"""Secrets at rest (personal key wrapped with scrypt, AES-GCM) and log redaction."""

from __future__ import annotations

import copy
import io
import logging
import pickle

import pytest

from sat.core.errors import PermissionDenied
from sat.memory import crypto
from sat.memory.crypto import (
    PersonalKey,
    ScryptParams,
    SecretsFilter,
    associated_data,
    install_secrets_filter,
    redact,
)

# cheap parameters where the cost is not what is tested
FAST = ScryptParams(n=2**10, r=8, p=1)


@pytest.fixture(scope="module")
def created():
    """One key with the real default parameters, wrapped for "pw"."""
    return PersonalKey.create("pw")


@pytest.fixture
def key():
    return PersonalKey.create("pw", params=FAST)[0]


# --- personal key --------------------------------------------------------------


def test_create_and_unwrap_with_default_parameters(created):
    key, wrapped = created
    assert wrapped[0] == crypto.WRAP_VERSION
    assert wrapped[2] == 14 and wrapped[3:5] == (8).to_bytes(2, "big")  # n = 2**14, r = 8
    assert not PersonalKey.needs_rewrap(wrapped)
    assert PersonalKey.unwrap(wrapped, "pw") == key


def test_wrong_password(created):
    _, wrapped = created
    with pytest.raises(PermissionDenied, match="wrong profile password"):
        PersonalKey.unwrap(wrapped, "not pw")


def test_unicode_password_is_normalized():
    key, wrapped = PersonalKey.create("caf\u00e9", params=FAST)
    assert PersonalKey.unwrap(wrapped, "cafe\u0301") == key
    assert PersonalKey.unwrap(wrapped, "caf\u00e9".encode()) == key


def test_empty_password_works_but_is_checked():
    key, wrapped = PersonalKey.create("", params=FAST)
    assert PersonalKey.unwrap(wrapped, "") == key
    with pytest.raises(PermissionDenied):
        PersonalKey.unwrap(wrapped, " ")


def test_tampered_wrapped_key_every_byte():
    _, wrapped = PersonalKey.create("pw", params=FAST)
    for i in range(len(wrapped)):
        tampered = bytearray(wrapped)
        tampered[i] ^= 0x01
        with pytest.raises(PermissionDenied):
            PersonalKey.unwrap(bytes(tampered), "pw")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda w: w[:10], "truncated|wrong length"),
        (lambda w: w[:5], "truncated"),
        (lambda w: b"", "truncated"),
        (lambda w: w + b"\0", "wrong length"),
        (lambda w: b"\x09" + w[1:], "unknown version 9"),
        (lambda w: w[:1] + b"\x07" + w[2:], "unknown key derivation 7"),
        (lambda w: w[:2] + b"\x40" + w[3:], "out of bounds"),  # n = 2**64
        (lambda w: w[:3] + b"\xff\xff" + w[5:], "out of bounds"),  # r = 65535
    ],
)
def test_malformed_wrapped_key(mutate, message):
    _, wrapped = PersonalKey.create("pw", params=FAST)
    with pytest.raises(PermissionDenied, match=message):
        PersonalKey.unwrap(mutate(wrapped), "pw")


def test_rewrap(key):
    wrapped = key.rewrap("new", params=FAST)
    assert PersonalKey.unwrap(wrapped, "new") == key
    with pytest.raises(PermissionDenied):
        PersonalKey.unwrap(wrapped, "pw")


def test_rewrap_keeps_secrets_readable():
    key, wrapped = PersonalKey.create("old", params=FAST)
    blob = key.encrypt("xmpp password")
    new_wrapped = PersonalKey.unwrap(wrapped, "old").rewrap("new", params=FAST)
    assert PersonalKey.unwrap(new_wrapped, "new").decrypt(blob) == b"xmpp password"
    with pytest.raises(PermissionDenied):
        PersonalKey.unwrap(new_wrapped, "old")


def test_parameters_stored_with_blob():
    key, wrapped = PersonalKey.create("pw", params=FAST)
    assert PersonalKey.needs_rewrap(wrapped)
    assert not PersonalKey.needs_rewrap(wrapped, FAST)
    upgraded = key.rewrap("pw")
    assert not PersonalKey.needs_rewrap(upgraded)
    assert PersonalKey.unwrap(upgraded, "pw") == key


def test_wrapping_is_salted(key):
    first, second = key.rewrap("pw", params=FAST), key.rewrap("pw", params=FAST)
    assert first != second
    assert PersonalKey.unwrap(first, "pw") == PersonalKey.unwrap(second, "pw") == key


def test_different_keys_each_time():
    assert PersonalKey.create("pw", params=FAST)[0] != PersonalKey.create("pw", params=FAST)[0]


def test_scrypt_params_checked():
    with pytest.raises(ValueError):
        ScryptParams(n=1000)
    with pytest.raises(ValueError):
        ScryptParams(n=2**22, r=64)  # 32 GiB


# --- secrets -------------------------------------------------------------------


def test_round_trip(key):
    assert key.decrypt(key.encrypt(b"\x00binary\xff")) == b"\x00binary\xff"
    assert key.decrypt(key.encrypt("s\u00e9cret")) == "s\u00e9cret".encode()
    assert key.decrypt(key.encrypt(b"")) == b""


def test_round_trip_with_associated_data(key):
    ad = associated_data("alice", "xmpp_password")
    assert key.decrypt(key.encrypt("pass", ad), ad) == b"pass"


def test_associated_data_mismatch_fails(key):
    blob = key.encrypt("pass", associated_data("alice", "xmpp_password"))
    for other in (
        associated_data("bob", "xmpp_password"),
        associated_data("alice", "omemo"),
        b"",
    ):
        with pytest.raises(PermissionDenied, match="cannot decrypt"):
            key.decrypt(blob, other)


def test_associated_data_is_unambiguous():
    assert associated_data("ab", "c") != associated_data("a", "bc")
    assert associated_data("a", b"b") == associated_data("a", "b")


def test_other_key_fails(key):
    other = PersonalKey.create("pw", params=FAST)[0]
    with pytest.raises(PermissionDenied):
        other.decrypt(key.encrypt("pass"))


def test_tampered_secret_every_byte(key):
    blob = key.encrypt("pass", b"ad")
    for i in range(len(blob)):
        tampered = bytearray(blob)
        tampered[i] ^= 0x80
        with pytest.raises(PermissionDenied):
            key.decrypt(bytes(tampered), b"ad")
    for broken in (b"", blob[:5], blob[:-1], b"\x02" + blob[1:]):
        with pytest.raises(PermissionDenied):
            key.decrypt(broken, b"ad")


def test_nonces_differ(key):
    blobs = [key.encrypt("same") for _ in range(50)]
    nonces = {b[1 : 1 + crypto.NONCE_SIZE] for b in blobs}
    assert len(nonces) == 50
    assert len(set(blobs)) == 50


def test_blob_format(key):
    blob = key.encrypt(b"hello")
    assert blob[0] == crypto.SECRET_VERSION
    assert len(blob) == 1 + crypto.NONCE_SIZE + len(b"hello") + crypto.TAG_SIZE


def test_blobs_do_not_contain_plaintext():
    key, wrapped = PersonalKey.create("profile-password-123", params=FAST)
    plaintext = b"my-very-secret-xmpp-password"
    blob = key.encrypt(plaintext)
    assert plaintext not in blob
    assert b"profile-password-123" not in wrapped
    assert key._key not in wrapped


def test_key_is_not_shown_or_pickled(key):
    raw = key._key
    for text in (repr(key), str(key), f"{key}"):
        assert raw.hex() not in text and repr(raw) not in text
        assert "hidden" in text
    with pytest.raises(TypeError):
        pickle.dumps(key)
    with pytest.raises(TypeError):
        copy.copy(key)
    with pytest.raises(TypeError):
        hash(key)


def test_key_size_checked():
    with pytest.raises(ValueError):
        PersonalKey(b"short")


# --- log redaction ---------------------------------------------------------------


@pytest.fixture
def secrets():
    SecretsFilter.clear()
    yield SecretsFilter
    SecretsFilter.clear()


@pytest.fixture
def logger_stream():
    """A logger with a handler writing to a StringIO, the filter installed like the daemon does."""
    logger = logging.getLogger("test_crypto.redaction")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    install_secrets_filter(logger)
    yield logger, stream
    logger.removeHandler(handler)
    logger.filters.clear()


def test_redact_function(secrets):
    assert redact("nothing registered") == "nothing registered"
    secrets.register("hunter2")
    assert redact("password is hunter2!") == "password is ***!"
    assert redact("hunter2hunter2") == "******"


def test_filter_redacts_message_and_args(secrets, logger_stream):
    logger, stream = logger_stream
    secrets.register("s3cr3t-pass")
    logger.info("connecting with password s3cr3t-pass")
    logger.info("connecting %s with %s", "alice@example.org", "s3cr3t-pass")
    logger.info("data: %r", {"password": "s3cr3t-pass"})
    logger.info("%(user)s/%(pw)s", {"user": "alice", "pw": "s3cr3t-pass"})
    logger.info("bytes: %r", b"s3cr3t-pass")
    output = stream.getvalue()
    assert "s3cr3t" not in output
    assert output.splitlines() == [
        "INFO connecting with password ***",
        "INFO connecting alice@example.org with ***",
        "INFO data: {'password': '***'}",
        "INFO alice/***",
        "INFO bytes: b'***'",
    ]


def test_filter_on_formatted_record(secrets):
    """A record with args, as a handler sees it: the formatted text has no secret."""
    secrets.register("pa55word")
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "login %s:%s", ("bob", "pa55word"), None
    )
    assert SecretsFilter().filter(record)
    assert logging.Formatter().format(record) == "login bob:***"


def test_filter_redacts_escaped_forms(secrets, logger_stream):
    logger, stream = logger_stream
    secrets.register("p\u00e4ss'word")
    logger.info("%r %r %s", "p\u00e4ss'word", "p\u00e4ss'word".encode(), "p\u00e4ss'word")
    assert "ss'word" not in stream.getvalue()
    assert "ss\\'word" not in stream.getvalue()


def test_filter_redacts_tracebacks(secrets, logger_stream):
    logger, stream = logger_stream
    secrets.register("tr4ceback-pw")
    try:
        raise ValueError("bad password tr4ceback-pw")
    except ValueError:
        logger.exception("failed")
    output = stream.getvalue()
    assert "ValueError: bad password ***" in output
    assert "tr4ceback-pw" not in output


def test_filter_leaves_clean_records_alone(secrets):
    secrets.register("unrelated")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    SecretsFilter().filter(record)
    assert record.msg == "hello %s" and record.args == ("world",)


def test_filter_with_bad_format_string(secrets):
    secrets.register("badfmt-pw")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%d %s", ("badfmt-pw",), None)
    SecretsFilter().filter(record)
    assert "badfmt-pw" not in record.getMessage()


def test_unregister(secrets):
    secrets.register("old-pw")
    secrets.register("old-pw")
    secrets.unregister("old-pw")
    assert redact("old-pw") == "***"
    secrets.unregister("old-pw")
    assert redact("old-pw") == "old-pw"
    secrets.register("")  # ignored: would match everywhere
    assert redact("abc") == "abc"


def test_install_on_root_covers_child_loggers(secrets):
    root = logging.getLogger()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    try:
        installed = install_secrets_filter()
        assert install_secrets_filter() is installed  # idempotent
        assert sum(isinstance(f, crypto.SecretsFilter) for f in handler.filters) == 1
        secrets.register("child-pw")
        logging.getLogger("sat.core.xmpp.some_child").warning("password=%s", "child-pw")
        assert stream.getvalue() == "password=***\n"
    finally:
        root.removeHandler(handler)
        root.removeFilter(installed)
        root.setLevel(old_level)
