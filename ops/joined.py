"""This machine as a member of a platform it joined with a join token: what it keeps, and the join itself.

It keeps, in `<data dir>/join/` (0700, files 0600): the platform's CA (`ca.pem`), its own NATS user seed
(`worker.nkey`, made here, never sent anywhere: the platform learns its public key) and `joined.json`
(the platform, URLs, worker id and labels). `stoker worker` on this data dir uses them from then on.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import socket
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import msgspec

from contracts.base import utcnow
from contracts.commands import ClaimJoinToken, JoinClaimed
from contracts.subjects import Topology
from eventstore.connect import NatsRefused, connect
from eventstore.micro import call
from eventstore.pki import short_fingerprint, write_private
from ops.joining import new_user_seed, public_key
from ops.jointoken import InvalidJoinToken, JoinToken, ca_pem, check_expiry, decode_token
from ops.lan import MulticastBlocked, browse

JOIN_DIR = "join"
CA_FILE, SEED_FILE, RECORD_FILE = "ca.pem", "worker.nkey", "joined.json"
CLAIM_TIMEOUT_S = 10.0
DISCOVER_TIMEOUT_S = 5.0  # how long a join listens for the platform's mDNS answer


class Joined(msgspec.Struct, frozen=True, kw_only=True):
    """The platform this data dir belongs to as a worker."""

    platform_id: str
    prefix: str
    fingerprint: str
    urls: list[str]
    worker_id: str
    labels: list[str]
    token_id: str
    joined_at: datetime

    @property
    def nats_url(self) -> str:
        """The URLs as STOKER_NATS_URL takes them."""
        return ",".join(self.urls)


def join_dir(data_dir: Path) -> Path:
    """Where a joined machine keeps what it joined with (0700)."""
    path = Path(data_dir) / JOIN_DIR
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def read_joined(data_dir: Path) -> Joined | None:
    """What this data dir joined, if it did."""
    try:
        return msgspec.json.decode((Path(data_dir) / JOIN_DIR / RECORD_FILE).read_bytes(), type=Joined)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def ca_path(data_dir: Path) -> Path:
    """The pinned CA of a joined data dir."""
    return Path(data_dir) / JOIN_DIR / CA_FILE


def seed_path(data_dir: Path) -> Path:
    """The joined worker's own NATS user seed."""
    return Path(data_dir) / JOIN_DIR / SEED_FILE


def default_worker_id(hostname: str, data_dir: Path) -> str:
    """`<host>-<6 hex of the data dir>`: one machine may run workers from several data dirs."""
    host = re.sub(r"[^A-Za-z0-9_-]", "-", hostname.split(".")[0])[:40].strip("-") or "worker"
    return f"{host}-{hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:6]}"


def check_same_platform(joined: Joined | None, token: JoinToken) -> None:
    """InvalidJoinToken when this data dir already belongs to another platform. Pure."""
    if joined is not None and (joined.platform_id != token.platform_id or joined.fingerprint != token.fingerprint):
        raise InvalidJoinToken(
            f"this data dir already joined platform {joined.platform_id} (CA {short_fingerprint(joined.fingerprint)}), "
            f"and the token is for platform {token.platform_id} (CA {short_fingerprint(token.fingerprint)}); "
            "join with another --data-dir")


def _own_seed(data_dir: Path) -> str:
    """This machine's NATS user seed: kept from an earlier join of the same platform, else made now."""
    path = seed_path(data_dir)
    with contextlib.suppress(OSError, ValueError):
        seed = path.read_text().strip()
        public_key(seed)
        return seed
    seed = new_user_seed()
    write_private(path, seed.encode())  # before the claim: the key the platform learns is never lost
    return seed


async def platform_urls(token: JoinToken, discover: bool, note: Callable[[str], None],
                        timeout_s: float = DISCOVER_TIMEOUT_S) -> list[str]:
    """Where to reach the token's platform: what mDNS finds for its id and CA fingerprint (when the token carries
    no address, or when asked), else the token's addresses; InvalidJoinToken when there is neither."""
    if token.urls and not discover:
        return list(token.urls)
    why = ""
    try:
        found = await browse(timeout_s, platform_id=token.platform_id, fingerprint=token.fingerprint)
    except MulticastBlocked as exc:
        found, why = [], str(exc)
    if found:
        note(f"found platform {token.platform_id} on the LAN by mDNS at {', '.join(found[0].announcement.nats_urls)}")
        return list(found[0].announcement.nats_urls)
    why = why or f"platform {token.platform_id} (CA {short_fingerprint(token.fingerprint)}) did not answer on mDNS " \
                 f"within {timeout_s:g} s"
    if not token.urls:
        raise InvalidJoinToken(f"{why}, and this join token carries no address: run `stoker discover` to check, or "
                               "make one with `stoker join-token create --url tls://HOST:PORT`")
    note(f"{why}: using the address in the token ({', '.join(token.urls)})")
    return list(token.urls)


def refused_token_message(token_id: str, urls: list[str]) -> str:
    """One line for a join token whose credential the platform no longer accepts."""
    return (f"join token {token_id} is no longer accepted by the platform at {', '.join(urls)}: it was already "
            "used, revoked or has expired; make a new one on the control plane with `stoker join-token create`")


async def join(data_dir: Path, text: str, worker_id: str | None = None, now: datetime | None = None, *,
               discover: bool = False, note: Callable[[str], None] = lambda _line: None) -> Joined:
    """Check the token, pin its CA, claim it over TLS with its credential, and keep what is needed to work."""
    token = decode_token(text)
    check_expiry(token, now or utcnow())
    urls = await platform_urls(token, discover, note)
    earlier = read_joined(data_dir)
    check_same_platform(earlier, token)
    folder = join_dir(data_dir)
    write_private(folder / CA_FILE, ca_pem(token))
    seed = _own_seed(data_dir)
    chosen = worker_id or (earlier.worker_id if earlier else default_worker_id(socket.gethostname(), data_dir))
    claim = ClaimJoinToken(token_id=token.token_id, worker_id=chosen, worker_key=public_key(seed),
                           hostname=socket.gethostname()[:255])
    try:
        nc = await connect(",".join(urls), "stoker-join", reconnect=False, ca_file=str(folder / CA_FILE),
                           seed=token.seed)
    except NatsRefused:
        # The join desk drops a token's credential soon after the token stops being claimable, so the server
        # itself refuses it: say what that means for the person holding the token, not for a NATS user.
        raise InvalidJoinToken(refused_token_message(token.token_id, urls)) from None
    try:
        reply = await call(nc, Topology(token.prefix), claim, JoinClaimed, timeout=CLAIM_TIMEOUT_S)
    finally:
        await nc.close()
    joined = Joined(platform_id=token.platform_id, prefix=token.prefix, fingerprint=token.fingerprint,
                    urls=urls, worker_id=reply.worker_id, labels=list(reply.labels),
                    token_id=token.token_id, joined_at=utcnow())
    write_private(folder / RECORD_FILE, msgspec.json.encode(joined))
    return joined
