"""A WebSocket client for trying Herald: binds one Subscription and prints what arrives.

    .venv/bin/python docs/examples/ws_listen.py http://127.0.0.1:8080/fhir SUBSCRIPTION_ID

It asks for a binding token (`$get-ws-binding-token`), connects to the `websocket-url` the
answer names, sends `bind-with-token <token>`, then prints one line per frame: the handshake,
then each event notification and heartbeat. Needs `websockets` and `httpx` (Herald's own).
"""

from __future__ import annotations

import asyncio
import json
import sys

import httpx
import websockets


def binding(base: str, subscription_id: str) -> dict[str, str]:
    """The `$get-ws-binding-token` answer's parameters: token, websocket-url, ..."""
    answer = httpx.get(f"{base}/Subscription/{subscription_id}/$get-ws-binding-token")
    answer.raise_for_status()
    return {
        p["name"]: p.get("valueString") or p.get("valueUrl") or ""
        for p in answer.json()["parameter"]
    }


async def listen(base: str, subscription_id: str) -> None:
    values = binding(base, subscription_id)
    async with websockets.connect(values["websocket-url"]) as socket:
        await socket.send(f"bind-with-token {values['token']}")
        print(f"bound to Subscription/{subscription_id}", flush=True)
        async for frame in socket:
            bundle = json.loads(frame)
            if bundle.get("resourceType") != "Bundle":
                print(f"{bundle.get('resourceType')}: {frame}", flush=True)
                continue
            status = bundle["entry"][0]["resource"]
            events = [str(e.get("eventNumber")) for e in status.get("notificationEvent", [])]
            shown = f", events {','.join(events)}" if events else ""
            print(f"{status.get('type')}{shown}", flush=True)


if __name__ == "__main__":
    asyncio.run(listen(sys.argv[1].rstrip("/"), sys.argv[2]))
