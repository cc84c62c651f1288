"""A join token's text: what a new machine needs to join a platform, signed by that platform's CA. Pure.

The token carries the NATS URLs and subject prefix, the platform's CA certificate (DER) and its SHA-256
fingerprint, the token's id, expiry and labels, the platform's id and the seed of a NATS credential that may
only claim this token (`ClaimJoinToken`). A machine pins the carried CA, so it fetches nothing over an
unverified connection.

Text: `SJ1` then base32 (RFC 4648, no padding) of msgpack `[payload, signature]`, where the signature is the
CA key's ECDSA signature over a context string and the payload: a token that was changed, cut short or
mistyped is refused. Upper-case letters and digits only: a QR code holds it in its dense alphanumeric mode.
Anyone holding the token can use it until it is used, expires or is revoked: it is a secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
from datetime import UTC, datetime
from typing import Annotated

import msgspec
import segno
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

PREFIX = "SJ1"
_CONTEXT = b"stoker join token v1\x00"
MAX_TOKEN_CHARS = 8192

Url = Annotated[str, msgspec.Meta(pattern=r"^(tls|nats)://[^\s,]{1,255}$")]


class InvalidJoinToken(ValueError):
    """The text is not a usable join token; the message says why in one line."""


class JoinToken(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    """What a join token says (the decoded payload)."""

    platform_id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    prefix: Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,31}$")]  # the platform's subject prefix
    token_id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    urls: Annotated[tuple[Url, ...], msgspec.Meta(max_length=16)]  # none: found by mDNS (ops/lan.py)
    ca_der: Annotated[bytes, msgspec.Meta(max_length=4096)]
    ca_sha256: Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
    expires_at: Annotated[int, msgspec.Meta(ge=0, le=2**40)]  # Unix seconds
    labels: Annotated[tuple[Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")], ...],
                      msgspec.Meta(max_length=32)]
    seed: Annotated[str, msgspec.Meta(pattern=r"^SU[A-Z2-7]{56}$")]  # a NATS user nkey seed
    reusable: bool = False

    @property
    def fingerprint(self) -> str:
        """The platform CA's fingerprint, hex."""
        return self.ca_sha256.hex()

    @property
    def expires(self) -> datetime:
        """When the token stops working."""
        return datetime.fromtimestamp(self.expires_at, UTC)


_payload_encoder = msgspec.msgpack.Encoder()
_payload_decoder = msgspec.msgpack.Decoder(JoinToken)
_outer_decoder = msgspec.msgpack.Decoder(tuple[bytes, bytes])


def encode_token(token: JoinToken, ca_key: ec.EllipticCurvePrivateKey) -> str:
    """The token's text, signed with the CA's key (the CA in the token must be that key's)."""
    payload = _payload_encoder.encode(token)
    signature = ca_key.sign(_CONTEXT + payload, ec.ECDSA(hashes.SHA256()))
    raw = _payload_encoder.encode((payload, signature))
    return PREFIX + base64.b32encode(raw).decode().rstrip("=")


def decode_token(text: str) -> JoinToken:
    """The token in `text`, once its fingerprint and signature are checked; InvalidJoinToken otherwise.

    Expiry is not checked here (see `check_expiry`): a token's contents stay readable after it expires.
    """
    text = "".join(text.split()).upper()  # line breaks and spaces from copying are harmless
    if not text.startswith(PREFIX):
        raise InvalidJoinToken(f"this is not a stoker join token (one starts with {PREFIX}); "
                               "make one with `stoker join-token create` on the platform")
    if len(text) > MAX_TOKEN_CHARS:
        raise InvalidJoinToken("this join token is too long to be one of stoker's")
    body = text[len(PREFIX):]
    try:
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
        payload, signature = _outer_decoder.decode(raw)
        token = _payload_decoder.decode(payload)
    except (ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise InvalidJoinToken("this join token is damaged (cut short or mistyped): copy it again in full") from None
    if not hmac.compare_digest(hashlib.sha256(token.ca_der).digest(), token.ca_sha256):
        raise InvalidJoinToken("this join token's CA certificate does not match its fingerprint: it was changed")
    try:
        ca = x509.load_der_x509_certificate(token.ca_der)
        key = ca.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ValueError("not an EC key")
        key.verify(signature, _CONTEXT + payload, ec.ECDSA(hashes.SHA256()))
    except (ValueError, InvalidSignature):
        raise InvalidJoinToken("this join token's signature does not verify: it was changed after it was made"
                               ) from None
    return token


def check_expiry(token: JoinToken, now: datetime) -> None:
    """InvalidJoinToken when the token has expired at `now`."""
    if now.timestamp() >= token.expires_at:
        raise InvalidJoinToken(f"join token {token.token_id} expired at {token.expires:%Y-%m-%d %H:%M} UTC; "
                               "make a new one with `stoker join-token create` on the platform")


def ca_pem(token: JoinToken) -> bytes:
    """The carried CA certificate as PEM (what a TLS client loads)."""
    return x509.load_der_x509_certificate(token.ca_der).public_bytes(serialization.Encoding.PEM)


def qr_text(text: str, border: int = 2) -> str:
    """A token as a QR code for a terminal, drawn with half blocks (two rows of modules per line of text)."""
    out = io.StringIO()
    segno.make(text, error="l").terminal(out=out, border=border, compact=True)
    return out.getvalue()
