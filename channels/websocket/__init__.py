"""The WebSocket channel: binding tokens, the sockets this process holds, and their transport."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from channels.websocket.api import MAX_FRAME_BYTES, websocket_router
    from channels.websocket.hub import SocketHub
    from channels.websocket.tokens import BindingTokens
    from channels.websocket.transport import WebSocketTransport
else:
    from fhirstore.surface import LazyExports

    __getattr__ = LazyExports(__name__)

__all__ = [
    "MAX_FRAME_BYTES",
    "BindingTokens",
    "SocketHub",
    "WebSocketTransport",
    "websocket_router",
]
