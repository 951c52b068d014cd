"""Notification delivery: the delivery core (`dispatcher.py`, `delivery.py`: ordering, retries,
status, dead letters) and one transport per channel behind the `Transport` port
(`transport.py`): REST hook (`resthook.py`), email (`email.py`), Kafka queue (`queue.py`) and
WebSocket (`websocket/`)."""
