"""A REST hook receiver for trying Herald: prints each notification it gets, answers 200.

    python3 docs/examples/receiver.py 9000

Standard library only. For each POST it prints the notification's type, its event numbers
and the resources it carries (a Subscription's first POST is its `handshake`), from the R4B
status (a SubscriptionStatus) or the R4 one (a Parameters resource, `fhirVersion=4.0`).
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.end_headers()
        print(describe(body, self.headers.get("Idempotency-Key")), flush=True)

    def log_message(self, format: str, *args: object) -> None:  # quiet: one line per POST
        return


def describe(body: bytes, key: str | None) -> str:
    """One line per notification: its type, events and focus resources."""
    try:
        bundle = json.loads(body)
    except ValueError:
        return f"POST of {len(body)} bytes (not JSON), Idempotency-Key {key}"
    status = bundle["entry"][0]["resource"]
    if status.get("resourceType") == "Parameters":  # the Backport IG's R4 form
        status = r4_status(status)
    events = [str(e.get("eventNumber")) for e in status.get("notificationEvent", [])]
    resources = [
        f"{r['resourceType']}/{r.get('id')}"
        for r in (e.get("resource") for e in bundle["entry"][1:])
        if r
    ]
    return (
        f"{status.get('type')} for {status.get('subscription', {}).get('reference')}"
        + (f", events {','.join(events)}" if events else "")
        + (f": {' '.join(resources)}" if resources else "")
        + f" (Idempotency-Key {key})"
    )


def r4_status(parameters: dict) -> dict:
    """The few facts `describe` prints, read from an R4 status (Parameters) into R4B's names."""
    status: dict = {"notificationEvent": []}
    for parameter in parameters.get("parameter", []):
        name = parameter.get("name")
        if name == "type":
            status["type"] = parameter.get("valueCode")
        elif name == "subscription":
            status["subscription"] = parameter.get("valueReference", {})
        elif name == "notification-event":
            parts = {p.get("name"): p for p in parameter.get("part", [])}
            number = parts.get("event-number", {}).get("valueString")
            status["notificationEvent"].append({"eventNumber": number})
    return status


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    print(f"listening on http://127.0.0.1:{port}/hook", flush=True)
    HTTPServer(("127.0.0.1", port), Receiver).serve_forever()
