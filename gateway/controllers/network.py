"""/api/v1/network/qr: this machine's LAN address and the "Open on your phone" QR code (viewer)."""

from __future__ import annotations

from litestar import Controller, Request, get
from litestar.exceptions import PermissionDeniedException

from gateway.auth import VIEWER
from gateway.controllers.common import GW, errors
from gateway.schemas.network import PhoneLinkView


class NetworkController(Controller):
    """The machine on the LAN."""

    path = "/network"
    tags = ["network"]

    @get("/qr", opt=VIEWER, responses=errors())
    async def qr(self, gw: GW, request: Request) -> PhoneLinkView:
        """The dashboard's LAN URL with a short-lived viewer token, as text and as an SVG QR code.

        `url` is null (and `reason` says why) while the gateway listens on loopback only or no LAN address
        is known. The token expires within `phone_token_minutes`, never after the caller's own token.
        """
        try:
            return await gw.phone.view(request.scope["state"]["token"].token_id)
        except PermissionError as exc:
            raise PermissionDeniedException(str(exc)) from None
