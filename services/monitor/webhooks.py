"""Alert notices out by webhook: a JSON (or text) POST per notice, retried with backoff, never blocking the alerter.

Each webhook has its own bounded queue and sender task; a notice that still fails after its tries is
logged and dropped (the alert itself is in the log either way).
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from typing import Annotated, Literal

import msgspec

from eventstore.follow import cancel_and_wait
from eventstore.observability import get_logger
from services.monitor.notices import Format, Notice, backoff_s, webhook_body

log = get_logger(component="monitor")
QUEUE_SIZE = 1000


class Webhook(msgspec.Struct, frozen=True, kw_only=True):
    """Where a rule set's notices go: `[[monitor.webhooks]]` with url, format, and the rules (empty: all)."""

    url: Annotated[str, msgspec.Meta(pattern=r"^https?://", max_length=2000)]
    format: Format = "json"
    rules: tuple[str, ...] = ()
    kinds: tuple[Literal["raised", "resolved", "reminder"], ...] = ("raised", "resolved", "reminder")
    tries: Annotated[int, msgspec.Meta(ge=1, le=20)] = 5
    backoff_s: Annotated[float, msgspec.Meta(gt=0)] = 2.0
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0

    def wants(self, notice: Notice) -> bool:
        """Whether this webhook is for that notice."""
        return notice.kind in self.kinds and (not self.rules or notice.rule in self.rules)


class Webhooks:
    """A sender task per webhook; `send` queues a notice for each webhook that wants it."""

    def __init__(self, hooks: tuple[Webhook, ...]) -> None:
        self.hooks = hooks
        self.queues = [asyncio.Queue[Notice](QUEUE_SIZE) for _ in hooks]
        self.tasks = [asyncio.create_task(self._sender(h, q), name="monitor-webhook")
                      for h, q in zip(hooks, self.queues, strict=True)]
        self.delivered = 0

    def send(self, notice: Notice) -> None:
        """Queue `notice` for every webhook that wants it (dropping it where a queue is full)."""
        for hook, queue in zip(self.hooks, self.queues, strict=True):
            if hook.wants(notice):
                try:
                    queue.put_nowait(notice)
                except asyncio.QueueFull:
                    log.warning("webhook queue full, dropping a notice", url=hook.url, alert_id=notice.alert_id)

    async def close(self) -> None:
        """Stop the senders (what is still queued is dropped)."""
        await cancel_and_wait(self.tasks)

    async def _sender(self, hook: Webhook, queue: asyncio.Queue[Notice]) -> None:
        while True:
            notice = await queue.get()
            body, content_type = webhook_body(notice, hook.format)
            for attempt in range(1, hook.tries + 1):
                error = await asyncio.to_thread(post, hook.url, body, content_type, hook.timeout_s)
                if error is None:
                    self.delivered += 1
                    break
                if attempt == hook.tries:
                    log.warning("webhook failed, notice dropped", url=hook.url, alert_id=notice.alert_id, error=error)
                else:
                    await asyncio.sleep(backoff_s(attempt, hook.backoff_s))


def post(url: str, body: bytes, content_type: str, timeout_s: float) -> str | None:
    """POST once; None when the endpoint said 2xx, else what went wrong."""
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": content_type, "User-Agent": "stoker-monitor"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:  # Webhook.url is http(s) only
            return None if 200 <= reply.status < 300 else f"HTTP {reply.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return str(exc)
