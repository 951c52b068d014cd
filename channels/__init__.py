"""Notification delivery: today over REST hook (`resthook`), with the dispatcher that orders,
retries and records it; websocket, email and Kafka queue channels come later."""
