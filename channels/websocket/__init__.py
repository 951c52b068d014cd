"""The WebSocket channel: binding tokens, the sockets this process holds, and their transport."""
