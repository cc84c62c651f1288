"""stoker's private CA and the NATS server certificate: made once, renewed when needed, pinned by clients."""

from __future__ import annotations

import hashlib
import ipaddress
import ssl
import stat
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from eventstore import pki

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NAMES = ("host-a", "host-a.lan", "localhost", "127.0.0.1", "::1", "192.0.2.10")


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def server_cert(tls: pki.ServerTls) -> x509.Certificate:
    return x509.load_pem_x509_certificate(tls.cert_file.read_bytes())


def test_the_ca_is_made_once_per_data_dir_with_a_private_key(tmp_path) -> None:
    cert, _key = pki.ensure_ca(tmp_path, T0)
    again, _ = pki.ensure_ca(tmp_path)
    assert again == cert
    assert mode(tmp_path / "tls" / pki.CA_KEY) == 0o600 and mode(tmp_path / "tls") == 0o700
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_after_utc > T0 + timedelta(days=3000)
    other, _ = pki.ensure_ca(tmp_path / "elsewhere", T0)
    assert other.public_key() != cert.public_key()


def test_the_fingerprint_is_the_sha256_of_the_ca_certificate_der(tmp_path) -> None:
    tls = pki.ensure_server_tls(tmp_path, NAMES, T0)
    der = x509.load_pem_x509_certificate(tls.ca_file.read_bytes()).public_bytes(serialization.Encoding.DER)
    assert tls.fingerprint == hashlib.sha256(der).hexdigest() == pki.file_fingerprint(tls.ca_file)
    assert pki.short_fingerprint(tls.fingerprint) == ":".join(tls.fingerprint[i:i + 2] for i in range(0, 16, 2))


def test_the_server_certificate_covers_the_names_and_addresses_and_is_signed_by_the_ca(tmp_path) -> None:
    tls = pki.ensure_server_tls(tmp_path, NAMES, T0)
    cert = server_cert(tls)
    alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(alt.get_values_for_type(x509.DNSName)) == {"host-a", "host-a.lan", "localhost"}
    assert set(alt.get_values_for_type(x509.IPAddress)) == {ipaddress.ip_address(a)
                                                             for a in ("127.0.0.1", "::1", "192.0.2.10")}
    ca = x509.load_pem_x509_certificate(tls.ca_file.read_bytes())
    cert.verify_directly_issued_by(ca)
    assert mode(tls.key_file) == 0o600


def test_the_server_certificate_is_kept_until_names_change_or_its_end_nears(tmp_path) -> None:
    first = server_cert(pki.ensure_server_tls(tmp_path, NAMES, T0))
    assert server_cert(pki.ensure_server_tls(tmp_path, NAMES, T0 + timedelta(days=300))) == first
    renamed = server_cert(pki.ensure_server_tls(tmp_path, (*NAMES, "nats.example"), T0 + timedelta(days=1)))
    assert renamed != first and "nats.example" in pki.cert_names(renamed)
    near_end = T0 + timedelta(days=1) + pki.SERVER_LIFETIME - pki.RENEW_BEFORE
    renewed = server_cert(pki.ensure_server_tls(tmp_path, (*NAMES, "nats.example"), near_end))
    assert renewed != renamed and renewed.not_valid_after_utc > near_end + timedelta(days=300)
    assert renewed.issuer == first.issuer  # the same CA throughout: joined machines keep working


def test_a_ca_that_cannot_be_read_is_said_not_replaced(tmp_path) -> None:
    pki.ensure_ca(tmp_path, T0)
    (tmp_path / "tls" / pki.CA_KEY).write_text("garbage")
    with pytest.raises(pki.TlsSetupError, match="cannot be read"):
        pki.ensure_ca(tmp_path)


@pytest.mark.parametrize(("listen", "mode_", "expected"), [
    ("127.0.0.1", "auto", False), ("127.0.0.1", "off", False), ("127.0.0.1", "on", True), ("::1", "auto", False),
    ("localhost", "auto", False), ("0.0.0.0", "auto", True), ("192.0.2.10", "auto", True), ("::", "on", True),
])
def test_tls_is_on_beyond_loopback_or_when_asked(listen: str, mode_: str, expected: bool) -> None:
    assert pki.decide_tls(listen, mode_) is expected


@pytest.mark.parametrize("listen", ["0.0.0.0", "192.0.2.10", "::"])
def test_plain_text_beyond_loopback_is_refused(listen: str) -> None:
    with pytest.raises(ValueError, match="only with TLS"):
        pki.decide_tls(listen, "off")


def test_machine_names_hold_loopback_the_listen_address_and_for_a_wildcard_every_address() -> None:
    specific = pki.machine_names("192.0.2.10", ["nats.example"])
    assert {"localhost", "127.0.0.1", "::1", "192.0.2.10", "nats.example"} <= set(specific)
    wildcard = pki.machine_names("0.0.0.0")
    assert set(pki.interface_addresses()) <= set(wildcard) and "0.0.0.0" not in wildcard


def test_a_client_context_trusts_only_the_given_ca_and_checks_names(tmp_path) -> None:
    tls = pki.ensure_server_tls(tmp_path, NAMES, T0)
    context = pki.client_context(tls.ca_file)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert len(context.get_ca_certs()) == 1  # never the system's store
    with pytest.raises(pki.TlsSetupError, match="cannot read the CA file"):
        pki.client_context(tmp_path / "missing.pem")
