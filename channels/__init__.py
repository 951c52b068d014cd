"""Notification delivery channels (rest-hook, websocket, email, kafka queue). Not built yet."""
