"""stoker's private CA: made once per data dir, it signs the NATS server's certificate; clients pin it.

Clients authenticate to NATS with their own credentials (nkeys), so TLS here only has to prove the server is
this platform's and keep the traffic private: the server needs no client certificates (no `verify`), and a
client trusts exactly one CA, never the system's. Keys are ECDSA P-256: small certificates (a join token
carries the CA's) and fast handshakes.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from contracts.addresses import is_loopback

TLS_DIR = "tls"
CA_CERT, CA_KEY = "ca.pem", "ca-key.pem"
SERVER_CERT, SERVER_KEY = "server.pem", "server-key.pem"
CA_LIFETIME = timedelta(days=3650)
SERVER_LIFETIME = timedelta(days=365)
RENEW_BEFORE = timedelta(days=30)
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


class TlsSetupError(RuntimeError):
    """The CA or a certificate cannot be read or made; the message names the file."""


@dataclass(frozen=True)
class ServerTls:
    """What a nats-server needs to speak TLS, and the CA its clients pin."""

    cert_file: Path
    key_file: Path
    ca_file: Path
    fingerprint: str  # of the CA
    names: tuple[str, ...]  # what the server certificate covers


def fingerprint(cert_der: bytes) -> str:
    """A CA's fingerprint: SHA-256 of its DER encoding, as lowercase hex."""
    return hashlib.sha256(cert_der).hexdigest()


def short_fingerprint(value: str) -> str:
    """The first 16 hex digits in pairs (`ab:cd:…`), enough for a person to compare."""
    return ":".join(value[i:i + 2] for i in range(0, 16, 2))


def is_wildcard(host: str) -> bool:
    """Whether a listen address means every interface."""
    return host.strip("[]") in ("0.0.0.0", "::", "")


def decide_tls(listen: str, mode: str) -> bool:
    """Whether NATS speaks TLS: `on`, or `auto` beyond loopback; ValueError for plain text beyond loopback."""
    if mode == "on":
        return True
    if is_loopback(listen):
        return False
    if mode == "off":
        raise ValueError(f"NATS may listen on {listen} only with TLS: other machines would see every message and "
                         "credential; drop `tls = \"off\"` from [nats], or listen on 127.0.0.1")
    return True


def machine_names(listen: str, extra: Iterable[str] = ()) -> tuple[str, ...]:
    """What the server certificate covers: host name, FQDN, the listen address(es) and loopback.

    A wildcard listen address covers every address of every interface (without IPv6 link-local ones).
    """
    names: list[str] = [socket.gethostname(), socket.getfqdn(), *LOOPBACK_NAMES, *extra]
    if is_wildcard(listen):
        names += interface_addresses(ipv6=":" in listen)
    else:
        names.append(listen.strip("[]"))
    return tuple(dict.fromkeys(n.lower() for n in names if n and n.isascii()))  # a certificate names ASCII only


def interface_addresses(ipv6: bool = False) -> list[str]:
    """The machine's own IP addresses (IPv4, and IPv6 when asked), loopback included."""
    import psutil

    families = {socket.AF_INET} | ({socket.AF_INET6} if ipv6 else set())
    found = []
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family in families and "%" not in address.address:
                found.append(address.address)
    return found


def write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner may read, never with wider permissions even for a moment."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    """A private key as unencrypted PKCS#8 PEM (written only through `write_private`)."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def tls_dir(data_dir: Path) -> Path:
    """Where a data dir keeps its CA and certificates (0700)."""
    path = Path(data_dir) / TLS_DIR
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def ensure_ca(data_dir: Path, now: datetime | None = None) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """This data dir's CA: made the first time (key 0600), the same one ever after."""
    folder = tls_dir(data_dir)
    cert_path, key_path = folder / CA_CERT, folder / CA_KEY
    if cert_path.exists() or key_path.exists():
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        except (OSError, ValueError) as exc:
            raise TlsSetupError(f"stoker's CA in {folder} cannot be read ({exc}); restore it from a backup, or "
                                "remove the folder to make a new CA (every joined machine must join again)") from None
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        key_path.chmod(0o600)
        return cert, key
    now = now or datetime.now(UTC)
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "stoker"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"stoker CA {socket.gethostname()}"[:64])])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    write_private(key_path, pem_key(key))  # the key first: a cert without its key is never left behind
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _alt_names(names: Iterable[str]) -> list[x509.GeneralName]:
    general: list[x509.GeneralName] = []
    for name in names:
        try:
            general.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            general.append(x509.DNSName(name))
    return general


def cert_names(cert: x509.Certificate) -> set[str]:
    """The names and addresses a certificate covers, as `machine_names` writes them."""
    try:
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {n.lower() for n in alt.get_values_for_type(x509.DNSName)} | {
        str(a) for a in alt.get_values_for_type(x509.IPAddress)}


def needs_renewal(cert: x509.Certificate, ca: x509.Certificate, names: Iterable[str], now: datetime) -> bool:
    """Whether a server certificate must be issued again: other names, another CA, or near its end."""
    wanted = {str(ipaddress.ip_address(n)) if _is_ip(n) else n.lower() for n in names}
    return (cert_names(cert) != wanted or cert.issuer != ca.subject
            or cert.not_valid_after_utc - RENEW_BEFORE <= now or cert.not_valid_before_utc > now)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def issue_server_cert(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, names: Iterable[str],
                      now: datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A server certificate for `names`, signed by the CA; usable by routes as a client certificate too."""
    names = list(names)
    key = _new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "stoker"),
                         x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64])])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + SERVER_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(_alt_names(names)), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert, key


def planned_server_tls(data_dir: Path, names: Iterable[str]) -> ServerTls:
    """Where `ensure_server_tls` puts the files for `names` (nothing is made yet; no fingerprint)."""
    folder = Path(data_dir) / TLS_DIR
    return ServerTls(folder / SERVER_CERT, folder / SERVER_KEY, folder / CA_CERT, "", tuple(dict.fromkeys(names)))


def ensure_server_tls(data_dir: Path, names: Iterable[str], now: datetime | None = None) -> ServerTls:
    """The CA (made once) and a server certificate for `names`, issued again when names change or it nears expiry."""
    now = now or datetime.now(UTC)
    names = tuple(dict.fromkeys(names))
    ca, ca_key = ensure_ca(data_dir, now)
    folder = tls_dir(data_dir)
    cert_path, key_path = folder / SERVER_CERT, folder / SERVER_KEY
    current = None
    with contextlib.suppress(OSError, ValueError):
        current = x509.load_pem_x509_certificate(cert_path.read_bytes())
    if current is None or not key_path.exists() or needs_renewal(current, ca, names, now):
        cert, key = issue_server_cert(ca, ca_key, names, now)
        write_private(key_path, pem_key(key))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return ServerTls(cert_path, key_path, folder / CA_CERT, fingerprint(ca.public_bytes(serialization.Encoding.DER)),
                     names)


def ca_der(data_dir: Path) -> bytes:
    """The data dir's CA certificate as DER (what a join token carries), making the CA if there is none."""
    cert, _key = ensure_ca(data_dir)
    return cert.public_bytes(serialization.Encoding.DER)


def der_to_pem(der: bytes) -> bytes:
    """A certificate's DER as PEM; ValueError when it is not a certificate."""
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)


def client_context(ca_file: str | Path) -> ssl.SSLContext:
    """A TLS context that trusts only this CA (never the system's) and checks the server's name."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED by default
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_verify_locations(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(f"cannot read the CA file {ca_file} ({exc})") from None
    return context


def file_fingerprint(ca_file: str | Path) -> str:
    """The fingerprint of the CA in a PEM file; '' when it cannot be read."""
    try:
        cert = x509.load_pem_x509_certificate(Path(ca_file).read_bytes())
    except (OSError, ValueError):
        return ""
    return fingerprint(cert.public_bytes(serialization.Encoding.DER))


def explain_tls_failure(url: str, exc: BaseException, ca_file: str | None) -> str | None:
    """One line for a TLS failure reaching NATS at `url`; None when `exc` is not about TLS."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or str(exc)
        if exc.verify_code == 62 or "mismatch" in reason.lower():  # X509_V_ERR_HOSTNAME_MISMATCH
            return (f"NATS at {url} presents a certificate for other names ({reason}); connect with a name or "
                    "address the server's certificate covers (the server adds more with [nats] names)")
        if not ca_file:
            return (f"NATS at {url} requires TLS with its platform's CA ({reason}); give the CA with STOKER_NATS_CA, "
                    "or join this machine with `stoker worker --join TOKEN`")
        pinned = short_fingerprint(file_fingerprint(ca_file)) or ca_file
        return (f"NATS at {url} presents a certificate not signed by the pinned CA {pinned} ({reason}): "
                "is this CA, or this join token, for another platform?")
    if isinstance(exc, ssl.SSLError) and ca_file:
        return (f"NATS at {url} did not complete a TLS handshake ({exc.reason or exc}); it may not have TLS on, and "
                "a client that pins a CA never talks to it in plain text")
    return None
