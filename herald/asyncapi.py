"""`herald asyncapi`: the AsyncAPI document of the Kafka topics Herald writes and reads.

Generated from what runs: a runtime is assembled as `herald serve` assembles it in the
scaled-out shape (Kafka, subscriptions and scheduler on), and never started. While it is built,
every part declares the topics it publishes to and subscribes its consumer groups on the Kafka
bus; FastStream documents that broker. The Kafka queue channel writes with a producer of its
own, not the bus, so its declaration (`channels.queue.QUEUE`) is added when the runtime has that
transport.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from channels import QUEUE
from events import asyncapi_document
from events.bus import KafkaBus
from herald import __version__
from herald.runtime import Runtime
from herald.settings import Settings


async def herald_asyncapi(bootstrap: str = "kafka:9092") -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="herald-asyncapi-") as folder:
        settings = Settings(
            database_url=f"sqlite+aiosqlite:///{Path(folder) / 'herald.db'}",
            kafka_bootstrap=bootstrap,
            kafka_namespace="",
            subscriptions=True,
            scheduler=True,
        )
        runtime = Runtime(settings)
        try:
            bus = runtime.bus
            assert isinstance(bus, KafkaBus), "the scaled-out shape runs on the Kafka bus"
            if "kafka" in runtime.transports:
                bus.declare(QUEUE)
            return asyncapi_document(
                bus.broker,
                title="Herald",
                version=__version__,
                description="Kafka topics written and read by Herald",
            )
        finally:
            await runtime.stop()
