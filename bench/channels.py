"""WebSocket and Kafka queue delivery next to REST hook: write -> notification latency, and
notifications/s in a burst.

Herald runs as a real `herald serve` process on 127.0.0.1, a fresh one (fresh database, own
Kafka namespace) for every row, in two shapes: embedded (SQLite file, in-process bus) and Kafka
(PostgreSQL, the test infrastructure's Kafka broker). Each row delivers over one channel to a
receiver in this process that parses every notification Bundle (orjson) as it arrives:

- `rest-hook`, the **baseline** of each shape: `bench.delivery`'s HTTP/1.1 receiver;
- `websocket`: a `websockets` client (default options, so permessage-deflate when offered) that
  got a token from `$get-ws-binding-token` and sent `bind-with-token` on one socket for all of
  the row's subscriptions;
- `kafka` (the Kafka queue channel, `kafka:bench.<id>` allowed by `HERALD_QUEUE_TOPICS=bench.*`):
  a plain aiokafka consumer of that topic. Only in the Kafka shape: the channel needs
  `HERALD_KAFKA_BOOTSTRAP`, and setting it also puts Herald's bus on Kafka, so an embedded
  Herald (in-process bus) cannot have the channel.

1. Latency: one `full-resource` subscription on `Observation?subject=Patient/<p>`; Observations
   about that patient POSTed at `--rate` writes/s (open loop) for `--seconds`, each carrying its
   write number as an identifier. Latency runs from just before the write is sent to the
   notification carrying it being received, on one clock (the code is `bench.delivery`'s).
   Compared with the REST hook row of the same shape.
2. Burst: `--subscriptions` subscriptions, each on its own patient, on one receiver (one socket,
   one topic); `--resources` matching Observations in transaction Bundles as fast as they are
   taken; notifications/s at the receiver. Compared with the REST hook row of the same shape,
   and with a raw ceiling of the channel's transport without Herald: a child process sends a
   real notification body, `RAW_FACTOR` x `--resources` times, to the same receiver: aiohttp
   with Herald's per-host connection limit (REST hook), a plain `websockets` server over one
   socket (WebSocket), an aiokafka producer with Herald's settings (acks=all, idempotent), one
   send at a time per subscription key as Herald sends (Kafka queue).

Run: `python -m bench.channels [--quick] [--shapes embedded,kafka] [--channels ...] ...`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.progress import Progress
from rich.table import Table
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from bench import delivery
from bench.delivery import (
    PER_HOST,
    RAW_FACTOR,
    READY_TIMEOUT_S,
    BurstRun,
    LatencyRun,
    Receiver,
    Sink,
    Tally,
    burst_writes,
    child_ceiling,
    create_subscriptions,
    herald,
    ratio,
    record,
    synthetic_body,
    timed_writes,
    wait_active,
    wait_until,
)
from bench.harness import (
    FHIR_JSON,
    Databases,
    InfraUnavailable,
    Latencies,
    console,
    ms,
    note,
    progress,
    rate,
)
from bench.relay_lag import Broker
from fhirstore.wire import CHANNEL_TYPE, HERALD_CHANNEL_TYPES
from tests.support.process import free_port

SHAPES = ("embedded", "kafka")
CHANNELS = ("rest-hook", "websocket", "kafka")  # the first is the baseline
NAMES = {"rest-hook": "rest-hook", "websocket": "websocket", "kafka": "kafka queue"}
QUEUE_TOPICS = "bench.*"  # HERALD_QUEUE_TOPICS of the Kafka-shape Herald
TOKEN_IDS = 100  # Herald binds at most this many subscriptions per token


# -- receivers ------------------------------------------------------------------------------------


class SocketSink:
    """A WebSocket client: every frame that arrives goes to `tally` (see `socket_sink`)."""

    def __init__(self, socket: ClientConnection) -> None:
        self.tally = Tally()
        self.socket = socket
        self.closed = ""  # why the socket closed, once it did
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                data = await self.socket.recv(decode=False)
                body = data if isinstance(data, bytes) else data.encode()
                self.tally.on_request(body, time.perf_counter())
        except ConnectionClosed as closed:
            self.closed = str(closed)

    async def aclose(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self.socket.close()


@contextlib.asynccontextmanager
async def socket_sink(url: str, within: float = READY_TIMEOUT_S) -> AsyncIterator[SocketSink]:
    """Connect to `url`, retrying while nothing listens there yet (`within` seconds at most)."""
    deadline = time.perf_counter() + within
    while True:
        try:
            socket = await connect(url, open_timeout=within)
            break
        except OSError as error:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"could not connect to {url} in {within:g}s: {error}") from None
            await asyncio.sleep(0.05)
    sink = SocketSink(socket)
    try:
        yield sink
    finally:
        await sink.aclose()


class QueueSink:
    """A plain aiokafka consumer of one topic, from its start: every record goes to `tally`."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.tally = Tally()
        self._consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            metadata_max_age_ms=500,  # notice the topic soon after its first write creates it
        )
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> QueueSink:
        await self._consumer.start()
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._consumer.stop()

    async def _read(self) -> None:
        while True:  # ends when cancelled
            for records in (await self._consumer.getmany(timeout_ms=100)).values():
                for record_ in records:
                    self.tally.on_request(record_.value or b"", time.perf_counter())


# -- subscriptions on each channel ----------------------------------------------------------------


def channel_subscription(channel: str, patient_id: str, endpoint: str) -> dict[str, Any]:
    """`bench.delivery`'s full-resource subscription, on `channel` (endpoint: REST hook URL
    or `kafka:<topic>`; unused for websocket)."""
    resource = delivery.subscription(endpoint, patient_id)
    resource["reason"] = "bench.channels"
    if channel == "websocket":
        resource["channel"]["type"] = "websocket"
        resource["channel"].pop("endpoint")
    elif channel == "kafka":
        kafka = {
            "url": CHANNEL_TYPE,
            "valueCoding": {"system": HERALD_CHANNEL_TYPES, "code": "kafka"},
        }
        resource["channel"].update(type="message", _type={"extension": [kafka]})
    return resource


async def binding_tokens(client: httpx.AsyncClient, ids: list[str]) -> list[tuple[str, str]]:
    """(token, websocket-url) pairs from `$get-ws-binding-token` that together bind `ids`."""
    found = []
    for start in range(0, len(ids), TOKEN_IDS):
        params = {"id": ids[start : start + TOKEN_IDS]}
        answer = await client.get("/Subscription/$get-ws-binding-token", params=params)
        if answer.status_code != 200:
            raise RuntimeError(f"no binding token: {answer.status_code} {answer.text[:300]}")
        values = {
            p["name"]: p.get("valueString", p.get("valueUrl")) for p in answer.json()["parameter"]
        }
        found.append((values["token"], values["websocket-url"]))
    return found


async def bind_all(
    sink: SocketSink, client: httpx.AsyncClient, ids: list[str], tokens: list[str]
) -> None:
    """Send `bind-with-token` for each token and wait until every subscription is `active`.

    Herald refuses a bind that comes before its matcher registered the new subscription (an
    OperationOutcome "Subscription/... is off"; seen on Kafka): bind again when that happens,
    and say how often it did."""
    refused = 0

    async def bind() -> None:
        for token in tokens:
            await sink.socket.send(f"bind-with-token {token}")

    async def again_if_refused() -> None:
        nonlocal refused
        if sink.closed:
            raise RuntimeError(f"Herald closed the WebSocket: {sink.closed}")
        if sink.tally.malformed > refused:  # OperationOutcome frames: refusals
            refused = sink.tally.malformed
            await bind()

    await bind()
    await wait_active(client, ids, again_if_refused)
    if refused:
        note(f"[yellow]Herald refused {refused} bind(s) of new subscriptions; bound again[/]")


@contextlib.asynccontextmanager
async def delivering(
    channel: str, patients: list[str], client: httpx.AsyncClient, receiver: Receiver, broker: Broker
) -> AsyncIterator[Sink]:
    """One `channel` subscription per patient, all `active`; yields where they arrive."""
    if channel == "rest-hook":
        resources = [channel_subscription(channel, p, receiver.url) for p in patients]
        await wait_active(client, await create_subscriptions(client, resources))
        yield receiver
    elif channel == "websocket":
        ids = await create_subscriptions(
            client, [channel_subscription(channel, p, "") for p in patients]
        )
        tokens = await binding_tokens(client, ids)
        async with socket_sink(tokens[0][1]) as sink:
            await bind_all(sink, client, ids, [token for token, _url in tokens])
            yield sink
            if sink.closed:
                note(f"[red]Herald closed the WebSocket: {sink.closed}[/]")
    else:
        bootstrap, topic = broker.bootstrap(), f"bench.{uuid.uuid4().hex[:10]}"
        if bootstrap is None:
            raise InfraUnavailable("no Kafka broker")
        async with QueueSink(bootstrap, topic) as sink:
            resources = [channel_subscription(channel, p, f"kafka:{topic}") for p in patients]
            await wait_active(client, await create_subscriptions(client, resources))
            yield sink


# -- the rows -------------------------------------------------------------------------------------


@dataclass
class Row:
    shape: str  # "embedded", "kafka", or "no Herald" for a raw ceiling
    channel: str
    sender: str
    latency: LatencyRun | None = None
    burst: BurstRun | None = None

    @property
    def label(self) -> str:
        return f"{self.shape} {NAMES[self.channel]}"


@contextlib.contextmanager
def showing(bar: Progress, description: str) -> Iterator[None]:
    """A progress line without a count while the block runs."""
    task = bar.add_task(description, total=None)
    try:
        yield
    finally:
        bar.remove_task(task)


async def herald_row(
    row: Row,
    part: str,
    dbs: Databases,
    broker: Broker,
    receiver: Receiver,
    args: argparse.Namespace,
    bar: Progress,
) -> None:
    """One row through a fresh Herald: `part` "latency" or "burst" over `row.channel`."""
    env = {"HERALD_QUEUE_TOPICS": QUEUE_TOPICS} if row.shape == "kafka" else {}
    if part == "latency":
        patients = [f"lat-{uuid.uuid4().hex[:10]}"]
    else:
        patients = [f"burst-{uuid.uuid4().hex[:8]}-{k}" for k in range(args.subscriptions)]
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(herald(row.shape, dbs, broker, **env))
        client = await stack.enter_async_context(
            httpx.AsyncClient(base_url=server.base, headers=FHIR_JSON, timeout=120)
        )
        with showing(bar, f"{row.label}: subscribing"):
            sink = await stack.enter_async_context(
                delivering(row.channel, patients, client, receiver, broker)
            )
        pid = server.proc.pid
        if part == "latency":
            row.latency = LatencyRun(row.shape, args.rate)
            await timed_writes(row.latency, row.label, client, patients[0], sink, pid, args, bar)
        else:
            row.burst = BurstRun(row.label, False, args.subscriptions, args.resources)
            await burst_writes(row.burst, row.label, [client], patients, sink, [pid], args, bar)


def _serve_frames(port: int, count: int, body: bytes) -> None:
    """In a child process: a plain websockets server that, once the client sends anything,
    sends it `body` `count` times as text frames, then waits for the client to close."""

    async def main() -> None:
        sent = asyncio.Event()

        async def handler(socket: ServerConnection) -> None:
            await socket.recv()
            text = body.decode()
            for _ in range(count):
                await socket.send(text)
            sent.set()
            await socket.wait_closed()

        async with serve(handler, "127.0.0.1", port), asyncio.timeout(delivery.MAX_WAIT_S):
            await sent.wait()

    asyncio.run(main())


def _produce(bootstrap: str, topic: str, count: int, keys: int, body: bytes) -> None:
    """In a child process: `count` messages of `body` with Herald's producer settings, one
    send_and_wait at a time per key (as Herald sends per subscription), `keys` keys at once."""

    async def main() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=True
        )
        await producer.start()
        numbers = iter(range(count))

        async def sender(key: bytes) -> None:
            headers = [
                ("Idempotency-Key", b"bench"),
                ("Content-Type", b"application/fhir+json"),
                ("Herald-Subscription", key),
                ("Herald-Notification-Type", b"event-notification"),
            ]
            for _ in numbers:  # shared: each message is sent once
                await producer.send_and_wait(topic, body, key=key, headers=headers)

        try:
            await asyncio.gather(*(sender(f"sub-{k}".encode()) for k in range(keys)))
        finally:
            await producer.stop()

    asyncio.run(main())


async def raw_row(
    channel: str,
    body: bytes,
    receiver: Receiver,
    broker: Broker,
    args: argparse.Namespace,
    task: Any,
    bar: Progress,
) -> Row:
    """The transport's ceiling without Herald, to the same kind of receiver as Herald's row."""
    count = args.resources * RAW_FACTOR
    if channel == "rest-hook":
        receiver.tally = tally = Tally()
        seen = lambda: receiver.tally.requests  # noqa: E731
        url = receiver.url
        run = await delivery.ceiling("aiohttp", "bench receiver", url, seen, body, args, task, bar)
        record(run, tally)
        return Row("no Herald", channel, f"aiohttp, {PER_HOST} conns", burst=run)
    if channel == "websocket":
        port = free_port()
        run = BurstRun("websockets server -> ws client", True, 0, count)
        async with contextlib.AsyncExitStack() as stack:
            sinks: list[SocketSink] = []

            async def connected() -> None:
                sink = await stack.enter_async_context(socket_sink(f"ws://127.0.0.1:{port}"))
                sinks.append(sink)
                await sink.socket.send("go")

            seen = lambda: sinks[0].tally.requests if sinks else 0  # noqa: E731
            target_args = (port, count, body)
            await child_ceiling(
                run, _serve_frames, target_args, seen, args.drain, task, bar, connected
            )
            if sinks:
                record(run, sinks[0].tally)
        return Row("no Herald", channel, "websockets, 1 socket", burst=run)
    bootstrap, topic = broker.bootstrap(), f"bench.raw.{uuid.uuid4().hex[:10]}"
    if bootstrap is None:
        raise InfraUnavailable("no Kafka broker")
    run = BurstRun("aiokafka producer -> consumer", True, 0, count)
    async with QueueSink(bootstrap, topic) as sink:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:  # create the topic and let the consumer find it, before the clock starts
            await producer.send_and_wait(topic, body)
        finally:
            await producer.stop()
        await wait_until(lambda: (sink.tally.requests > 0, 0), READY_TIMEOUT_S)
        if not sink.tally.requests:
            raise RuntimeError(f"the consumer did not see topic {topic} in {READY_TIMEOUT_S}s")
        sink.tally = tally = Tally()
        seen = lambda: sink.tally.requests  # noqa: E731
        target_args = (bootstrap, topic, count, args.subscriptions, body)
        await child_ceiling(run, _produce, target_args, seen, args.drain, task, bar)
        record(run, tally)
    sender = f"aiokafka, {args.subscriptions} keys"
    return Row("no Herald", channel, sender, burst=run)


def sample_body(rows: list[Row], channel: str) -> bytes:
    """A notification body Herald sent over `channel` in this run (else one shaped like it)."""
    for row in rows:
        if row.channel == channel and row.shape != "no Herald":
            for sample in (
                row.latency and row.latency.tally.sample,
                row.burst and row.burst.sample,
            ):
                if sample:
                    return sample
    return synthetic_body()


# -- tables ---------------------------------------------------------------------------------------


def latency_table(rows: list[Row], args: argparse.Namespace) -> Table:
    out = Table(
        title=(
            f"Write -> notification latency by channel: {args.rate:g} Observation writes/s for "
            f"{args.seconds:g} s, one full-resource subscription, a fresh Herald per row"
        ),
        caption=(
            "latency = just before the HTTP POST /fhir/Observation is sent -> the notification "
            "carrying that write received (REST hook request, WebSocket frame, Kafka record); "
            "'vs rest-hook' divides by the rest-hook row of the same shape (baseline, same run); "
            f"'lost' = no notification once none had arrived for {args.drain:g} s; 'notif/s' "
            "from the first write to the last notification ('behind': fewer than the writes/s, "
            "a backlog grew); 'write p50' = the POST itself; the kafka queue channel needs Herald "
            "on Kafka, so it has no embedded row; CPU: 100% = one core busy, machine = busy cores"
        ),
    )
    out.add_column("shape")
    out.add_column("channel")
    for name in ("count", "lost", "dup", "writes/s", "notif/s", "p50 ms", "p95 ms", "p99 ms"):
        out.add_column(name, justify="right")
    for name in ("max ms", "p50 vs rest-hook", "p99 vs rest-hook", "write p50 ms"):
        out.add_column(name, justify="right")
    for name in ("herald CPU", "bench CPU", "machine"):
        out.add_column(name, justify="right")
    base = {
        r.shape: Latencies.of(r.latency.latencies)
        for r in rows
        if r.latency and r.channel == CHANNELS[0]
    }
    shape = None
    for row in rows:
        run = row.latency
        if run is None:
            continue
        if shape is not None and row.shape != shape:
            out.add_section()
        shape = row.shape
        lat, baseline = Latencies.of(run.latencies), base.get(row.shape, Latencies.of([]))
        achieved = len(run.write_seconds) / run.elapsed if run.elapsed > 0 else math.nan
        delivered = run.notifications_per_second
        failed = f" [red](+{run.errors} failed)[/]" if run.errors else ""
        out.add_row(
            row.shape, NAMES[row.channel],
            f"{len(run.latencies):,}/{len(run.write_seconds):,}{failed}",
            f"[red]{run.lost}[/]" if run.lost else "0", str(run.tally.duplicates),
            rate(achieved) + (" [yellow]saturated[/]" if achieved < 0.95 * run.rate else ""),
            rate(delivered) + (" [yellow]behind[/]" if delivered < 0.95 * achieved else ""),
            ms(lat.p50), ms(lat.p95), ms(lat.p99), ms(lat.max),
            *(
                "baseline" if row.channel == CHANNELS[0] else ratio(a, b)
                for a, b in ((lat.p50, baseline.p50), (lat.p99, baseline.p99))
            ),
            ms(Latencies.of(run.write_seconds).p50), *run.cpu,
        )  # fmt: skip
    return out


def burst_table(rows: list[Row], args: argparse.Namespace) -> Table:
    out = Table(
        title=(
            f"Notifications/s by channel: {args.resources:,} matching Observations in transaction "
            f"Bundles of {args.bundle_size}, {args.subscriptions} subscriptions on one receiver"
        ),
        caption=(
            "notif/s = notifications received per second, first -> last arrival; writes = first "
            "Bundle sent -> last answered; total = first Bundle sent -> last notification; "
            f"'lost' = not received once none had arrived for {args.drain:g} s; 'dup' = an "
            "eventNumber received twice. Receivers, in this process: bench.delivery's HTTP "
            "receiver (rest-hook), a websockets client on one socket (websocket), an aiokafka "
            "consumer of one topic (kafka queue). 'no Herald' rows (the transports' ceilings): "
            f"a child process sends one real notification body {RAW_FACTOR}x as often to the "
            "same receiver; 'vs raw' divides by the one of the same channel, 'vs rest-hook' by "
            "the rest-hook row of the same shape (baseline, same run). sender CPU = the Herald "
            "(or ceiling) process, 100% = one core; machine = busy cores"
        ),
    )
    for name in ("shape", "channel", "sender"):
        out.add_column(name)
    for name in ("subs", "received", "lost", "dup", "body B", "writes s", "first->last s"):
        out.add_column(name, justify="right")
    for name in ("notif/s", "total s", "vs rest-hook", "vs raw", "sender CPU", "bench CPU"):
        out.add_column(name, justify="right")
    out.add_column("machine", justify="right")
    raw = {r.channel: r.burst.per_second for r in rows if r.burst and r.shape == "no Herald"}
    rest = {r.shape: r.burst.per_second for r in rows if r.burst and r.channel == CHANNELS[0]}
    shape = None
    for row in rows:
        run = row.burst
        if run is None:
            continue
        if shape is not None and row.shape != shape:
            out.add_section()
        shape = row.shape
        lost = run.expected - run.received
        vs_raw = raw.get(row.channel, math.nan)
        ceiling = row.shape == "no Herald"
        vs_rest = (
            "-"
            if ceiling
            else "baseline"
            if row.channel == CHANNELS[0]
            else ratio(run.per_second, rest.get(row.shape, math.nan))
        )
        out.add_row(
            row.shape, NAMES[row.channel], row.sender,
            "-" if ceiling else str(run.subscriptions), f"{run.received:,}",
            f"[red]{lost}[/]" if lost else "0", str(run.duplicates), rate(run.body_bytes),
            "-" if math.isnan(run.write_seconds) else f"{run.write_seconds:.2f}",
            f"{run.last - run.first:.2f}" if run.received > 1 else "-",
            rate(run.per_second),
            "-" if math.isnan(run.started) else f"{run.total_seconds:.2f}",
            vs_rest, "ceiling" if ceiling else ratio(run.per_second, vs_raw),
            *run.cpu,
        )  # fmt: skip
    return out


# -- main -----------------------------------------------------------------------------------------


def herald_rows(args: argparse.Namespace) -> list[tuple[str, Row]]:
    """(part, row) through Herald, in the order they run (each shape's baseline first)."""
    return [
        (part, Row(shape, channel, "Herald"))
        for shape in args.shapes
        for part in args.parts
        for channel in args.channels
        if channel != "kafka" or shape == "kafka"  # the queue channel needs Herald on Kafka
    ]


async def ceiling_rows(
    rows: list[Row], receiver: Receiver, broker: Broker, args: argparse.Namespace, bar: Progress
) -> list[Row]:
    """The raw ceiling of each channel measured (Kafka's only if the broker runs anyway)."""
    ceilings = []
    task = bar.add_task("ceiling", total=None)
    for channel in args.channels:
        if channel == "kafka" and "kafka" not in args.shapes:
            continue
        body = sample_body(rows, channel)
        try:
            ceilings.append(await raw_row(channel, body, receiver, broker, args, task, bar))
        except (InfraUnavailable, RuntimeError) as error:
            note(f"[yellow]no {NAMES[channel]} ceiling: {error}[/]")
    bar.remove_task(task)
    return ceilings


async def main(args: argparse.Namespace) -> None:
    dbs, broker = Databases(), Broker()
    rows: list[Row] = []
    try:
        with progress() as bar:
            async with Receiver() as receiver:
                for part, row in herald_rows(args):
                    try:
                        await herald_row(row, part, dbs, broker, receiver, args, bar)
                    except InfraUnavailable as error:
                        note(f"[yellow]skipping {row.label}: {error}[/]")
                        continue
                    except RuntimeError as error:  # the other rows may still work
                        note(f"[red]{row.label} {part} stopped: {error}[/]")
                        continue
                    rows.append(row)
                dbs.close()  # the ceilings should not share the cores with PostgreSQL
                if "burst" in args.parts:
                    rows = await ceiling_rows(rows, receiver, broker, args, bar) + rows
    finally:
        broker.close()
        dbs.close()
    if any(r.latency for r in rows):
        console.print(latency_table(rows, args))
    if any(r.burst for r in rows):
        console.print(burst_table(rows, args))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.channels",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="4 s of writes, 500 resources")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="embedded,kafka")
    parser.add_argument("--channels", default=",".join(CHANNELS), help="rest-hook,websocket,kafka")
    parser.add_argument("--parts", default="latency,burst", help="latency,burst")
    parser.add_argument("--rate", type=float, default=100, help="writes/s for the latency part")
    parser.add_argument("--seconds", type=float, help="how long to write (10; --quick 4)")
    parser.add_argument("--in-flight", type=int, default=64, help="most latency writes at once")
    parser.add_argument("--subscriptions", type=int, default=50, help="for the burst")
    parser.add_argument("--resources", type=int, help="burst size (2,000; --quick 500)")
    parser.add_argument("--bundle-size", type=int, default=200, help="entries per Bundle")
    parser.add_argument("--bundle-workers", type=int, default=2, help="Bundles in flight")
    parser.add_argument(
        "--drain", type=float, default=30, help="give up after this long without a notification (s)"
    )
    args = parser.parse_args(argv)
    args.seconds = args.seconds or (4.0 if args.quick else 10.0)
    args.resources = args.resources or (500 if args.quick else 2_000)
    for name, known in (
        ("shapes", SHAPES),
        ("channels", CHANNELS),
        ("parts", ("latency", "burst")),
    ):
        chosen = [s.strip() for s in getattr(args, name).split(",") if s.strip()]
        if unknown := [s for s in chosen if s not in known]:
            parser.error(f"unknown {name} {unknown}; choose from {', '.join(known)}")
        setattr(args, name, [s for s in known if s in chosen])  # the baseline channel first
    return args


if __name__ == "__main__":
    # Until the first write auto-creates a topic, a consumer of it logs errors.
    logging.getLogger("aiokafka.cluster").setLevel(logging.CRITICAL)
    asyncio.run(main(parse_args()))
