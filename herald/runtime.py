"""The running parts of one Herald process, built from settings, started in order and
stopped in the reverse order through one `AsyncExitStack`.

`Runtime` owns the engine, the store, the bus and the background workers: the outbox relay,
the subscription matcher, the dispatcher, the CarePlan scheduler, the audit trail's writer,
the quarantine's replays and, after an upgrade that changed indexing, the search index
rebuild.
`herald serve` runs the API with all of them; `herald relay` runs only the relay, so each part
can be scaled on its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from channels import (
    Attempt,
    BoundedTries,
    DeliveryPolicy,
    Dispatcher,
    EndpointGuard,
    Outage,
    Recipients,
    RestHookTransport,
    SafeEndpoints,
    Transport,
    attempt_recorder,
    new_owner,
)
from channels.websocket import BindingTokens, SocketHub, WebSocketTransport
from events import OutboxRelay
from events.bus import Bus, KafkaBus, MemoryBus
from events.quarantine import Quarantine, run_replays
from fhirstore import Clock, Store, SystemClock, ValidationPool, run_in_background
from fhirstore.access import AuditTrail, Record
from fhirstore.api import AUDIT_EVENT, refuse_writes
from fhirstore.db import create_engine, upgrade
from fhirstore.search import ucum
from herald import __version__
from herald.channel_support import channel_support, optional_transports
from herald.gil import hand_over_promptly
from herald.heap import freeze_startup_heap
from herald.index_rebuild import IndexRebuild
from herald.settings import Settings
from scheduler import PlanTag, ScheduleLimits, SchedulePolicy, Scheduler, careplan_rule
from scheduler.timing import WhenClock
from subscriptions import (
    BUILTIN_TOPIC_RESERVATION,
    NOTIFICATION_JOBS,
    SUBSCRIPTION,
    SUBSCRIPTION_TOPIC,
    ErrorMarks,
    FhirPathBudget,
    FhirPathRunner,
    Ledger,
    Lifecycle,
    Matcher,
    MissedByBudgetReporter,
    OwnerLimit,
    SubscriptionRegistry,
    UnloadedReporter,
    notification_job,
    owned_topic_rule,
    seed_builtin_topics,
    subscription_rule,
)

log = logging.getLogger(__name__)


def delivery_policy(
    settings: Settings,
    record_attempt: Callable[[Attempt], None] | None = None,
    record_write: Record | None = None,
    outage: Outage | None = None,
) -> DeliveryPolicy:
    return DeliveryPolicy(
        base_url=settings.public_base_url
        or f"http://{settings.host}:{settings.port}{settings.fhir_base_path}",
        default_timeout=settings.delivery_timeout_seconds,
        initial_backoff=settings.delivery_initial_backoff_seconds,
        max_backoff=settings.delivery_max_backoff_seconds,
        give_up_after=timedelta(hours=settings.delivery_give_up_hours),
        lease=timedelta(seconds=settings.delivery_lease_seconds),
        sweep_interval=settings.dispatcher_sweep_seconds,
        max_workers=settings.delivery_max_connections,
        retention=timedelta(hours=settings.subscription_event_retention_hours),
        record_attempt=record_attempt,
        record_write=record_write,
        # A notification that cannot be built or sent gets the quarantine's tries.
        unsendable=BoundedTries(
            settings.quarantine_attempts,
            settings.quarantine_initial_backoff_seconds,
            settings.quarantine_max_backoff_seconds,
            outage,
        ),
    )


def schedule_policy(settings: Settings) -> SchedulePolicy:
    """The scheduler's policy; a bad setting stops the start with a message saying which."""
    try:
        return SchedulePolicy(
            horizon=timedelta(days=settings.scheduler_horizon_days),
            lead=timedelta(minutes=settings.scheduler_lead_minutes),
            grace=timedelta(hours=settings.scheduler_grace_hours),
            appointment_lead=timedelta(hours=settings.scheduler_appointment_lead_hours),
            default_zone=ZoneInfo(settings.scheduler_default_timezone),
            when=WhenClock.parse(settings.scheduler_when_times),
            tag=PlanTag.parse(settings.scheduler_careplan_tag)
            if settings.scheduler_careplan_tag
            else None,
            limits=ScheduleLimits(
                activities=settings.limit_careplan_activities,
                tasks_per_careplan=settings.limit_careplan_tasks,
                tasks_per_patient=settings.limit_patient_tasks,
            ),
        )
    except (ValueError, ZoneInfoNotFoundError) as error:
        raise ValueError(f"scheduler settings (HERALD_SCHEDULER_*): {error}") from error


def make_bus(settings: Settings) -> Bus:
    if settings.kafka_bootstrap:
        return KafkaBus(settings.kafka_bootstrap, namespace=settings.kafka_namespace)
    return MemoryBus()


class Runtime:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        bus: Bus | None = None,
        run_relay: bool = True,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.engine = create_engine(settings.database_url)
        self.store = Store(self.engine, self.clock, settings.search_limits)
        self.store.validation = ValidationPool(settings.validation_workers)
        self.bus = bus or make_bus(settings)
        self.bus.declare(NOTIFICATION_JOBS)  # `nudge` publishes jobs, with a matcher here or not
        self.relay = OutboxRelay(
            self.store,
            self.bus,
            batch_size=settings.relay_batch_size,
            poll_interval=settings.relay_poll_seconds,
            retention=timedelta(hours=settings.outbox_retention_hours),
        )
        self.quarantine = Quarantine(
            self.store,
            attempts=settings.quarantine_attempts,
            initial_backoff=settings.quarantine_initial_backoff_seconds,
            max_backoff=settings.quarantine_max_backoff_seconds,
        )
        self.bus.set_aside_with(self.quarantine)  # no consumer retries a change forever
        self._run_relay = run_relay
        self._stack = AsyncExitStack()  # what `start` started, to unwind at `stop`
        self.ready = False
        self.ledger = Ledger(self.store)
        self.index_rebuild = IndexRebuild(
            self.store, self.clock, enabled=settings.search_reindex_at_start
        )
        channels = channel_support(settings)
        budget = FhirPathBudget(settings.fhirpath_max_steps, settings.fhirpath_timeout_ms)
        # Threads of their own for matching, so that clients trying topics at create (as many
        # at once as they like) never queue ahead of the stream.
        self.fhirpath = FhirPathRunner(budget)
        self.fhirpath_trials = FhirPathRunner(budget)
        # The API's and the dispatchers' view: looked up, never matched against.
        self.registry = SubscriptionRegistry(
            self.store, channels=channels, fhirpath=self.fhirpath, matching=False
        )
        self.registry.show_unloaded_in_metrics()
        guard = (
            EndpointGuard.parse(settings.endpoint_allowlist) if settings.endpoint_guard else None
        )
        self.store.add_rule(
            SUBSCRIPTION,
            subscription_rule(
                self.registry,
                SafeEndpoints(
                    guard=guard,
                    recipients=Recipients.parse(
                        settings.email_allowlist, required=settings.auth != "off"
                    ),
                ).problem,
                OwnerLimit(
                    self.store,
                    SUBSCRIPTION,
                    settings.limit_subscriptions_per_owner,
                    "LIMIT_SUBSCRIPTIONS_PER_OWNER",
                ),
            ),
        )
        topics = OwnerLimit(
            self.store,
            SUBSCRIPTION_TOPIC,
            settings.limit_topics_per_owner,
            "LIMIT_TOPICS_PER_OWNER",
        )
        self.store.add_rule(SUBSCRIPTION_TOPIC, owned_topic_rule(topics, self.fhirpath_trials))
        # Every process refuses CarePlans over the limits, whether or not it schedules.
        scheduling = schedule_policy(settings)
        self.store.add_rule("CarePlan", careplan_rule(self.store, scheduling))
        self.store.reserve(SUBSCRIPTION_TOPIC, BUILTIN_TOPIC_RESERVATION)
        self.store.add_rule(AUDIT_EVENT, refuse_writes)
        retention = settings.audit_retention_days
        self.audit = AuditTrail(
            self.store, retention=timedelta(days=retention) if retention else None
        )
        # Told of every delivery attempt, the dispatcher's and a WebSocket bind's handshake.
        self.record_attempt = attempt_recorder(self.audit) if settings.audit else None
        # Told of every write Herald makes as one of its system identities.
        self.record_write = self.audit.record if settings.audit else None
        policy = delivery_policy(
            settings, self.record_attempt, self.record_write, self.quarantine.outage
        )
        owner = new_owner()
        self.hub = SocketHub(self.store, self.bus, owner=owner, lease=policy.lease)
        self.binding_tokens = BindingTokens(
            self.store, lifetime=timedelta(seconds=settings.websocket_token_seconds)
        )
        self.transports: dict[str, Transport] = {
            "rest-hook": RestHookTransport(
                max_connections=settings.delivery_max_connections,
                user_agent=f"Herald/{__version__}",
                guard=guard,
            ),
            "websocket": WebSocketTransport(self.hub),
            **optional_transports(settings),
        }
        self.dispatcher = Dispatcher(
            self.store,
            self.ledger,
            self.registry,
            self.transports,
            self.bus,
            policy=policy,
            owner=owner,
        )
        if settings.subscriptions:
            # The matcher's own view of the subscriptions, in step with the changes it matches.
            self.matching_registry = SubscriptionRegistry(
                self.store, channels=channels, fhirpath=self.fhirpath, shares_with=self.registry
            )
            self.missed_by_budget = MissedByBudgetReporter(
                self.ledger, Lifecycle(self.store, self.ledger, record=self.record_write)
            )
            self.matching_registry.index.on_missed = self.missed_by_budget
            # Stored Subscriptions that cannot be loaded go to `error` with the reason.
            self.unloaded_reporter = UnloadedReporter(
                self.ledger, Lifecycle(self.store, self.ledger, record=self.record_write)
            )
            self.matching_registry.watcher = self.unloaded_reporter
            # Subscriptions whose filters' ValueSets can no longer be expanded show `error`.
            self.filter_problems = ErrorMarks(
                self.ledger, Lifecycle(self.store, self.ledger, record=self.record_write)
            )
            self.matching_registry.on_filter_problem = self.filter_problems.mark
            Matcher(self.store, self.ledger, self.matching_registry, self.bus).subscribe()
            self.dispatcher.subscribe()
        self.hub.listen()  # any API process may hold WebSockets
        self.scheduler = Scheduler(
            self.store,
            self.bus,
            scheduling,
            sweep_interval=settings.scheduler_sweep_seconds,
            due_interval=settings.scheduler_due_seconds,
            audit=self.record_write,
        )
        if settings.scheduler:
            self.scheduler.subscribe()

    async def nudge(self, subscription_id: str) -> None:
        """Have the subscription's dispatcher (whichever process) send what it owes now."""
        await self.bus.publish([notification_job(subscription_id, None, retry_now=True)])

    async def start(self) -> None:
        """Start every part this process runs. Each part's start registers its own stop on
        one exit stack, so `stop` is that stack unwinding: the parts stop in the reverse order
        of their start. If a part fails to start, what started is stopped before it raises."""
        stack = AsyncExitStack()
        try:
            await self._start_parts(stack)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack

    async def stop(self) -> None:
        """Stop what `start` started, last started first (nothing if it did not start)."""
        stack, self._stack = self._stack, AsyncExitStack()
        await stack.aclose()

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def load_registries(self) -> None:
        """Load the stored topics and subscriptions into this process's registries."""
        await self.registry.load()
        if self.settings.subscriptions:
            await self.matching_registry.load()

    async def _start_parts(self, stack: AsyncExitStack) -> None:
        # Stopped last: the database and the threads that parts use until they stop.
        stack.push_async_callback(self.engine.dispose)
        stack.callback(self.fhirpath.close)
        stack.callback(self.store.validation.close)
        stack.callback(self.fhirpath_trials.close)
        if self.store.checkpointer is not None:
            # Its timer would otherwise fire after the loop has shut its executor down.
            stack.push_async_callback(self.store.checkpointer.drain)
        await upgrade(self.engine)
        # The UCUM registry (some 0.65 s) now, on a thread, rather than inside the first
        # write or search of a UCUM quantity.
        await asyncio.to_thread(ucum.load)
        await self.index_rebuild.start(stack)
        await seed_builtin_topics(self.store)
        await self.load_registries()
        self._loaded()
        # Written until everything that records has stopped, then what is left.
        stack.push_async_callback(self._flush_audit)
        self._spawn(stack, "audit-trail", self.audit.run)
        for transport in self.transports.values():  # closed once no worker sends
            stack.push_async_callback(transport.aclose)
        if self.settings.subscriptions:
            # After the bus stopped: the matcher reports no more missed events.
            stack.push_async_callback(self.missed_by_budget.drain)
            stack.push_async_callback(self.unloaded_reporter.drain)
            stack.push_async_callback(self.filter_problems.drain)
        await self.bus.start()
        stack.push_async_callback(self.bus.stop)
        if self._run_relay:
            self.store.add_commit_listener(self.relay.wake)
            self._spawn(stack, "outbox-relay", self.relay.run)
        if self.settings.subscriptions:
            # Its workers stop with the sweep (`Dispatcher.run`), before the bus does.
            self._spawn(stack, "dispatcher", self.dispatcher.run)
        await self.hub.start()
        self._spawn(stack, "websocket-bindings", self.hub.run)
        if self.bus.consumers():
            self._spawn(
                stack,
                "quarantine-replays",
                lambda: run_replays(
                    self.quarantine, self.bus, self.settings.quarantine_replay_seconds
                ),
            )
        freeze_startup_heap()
        hand_over_promptly()
        if self.settings.scheduler:
            await self.scheduler.start(stack)
        self.ready = True
        stack.callback(setattr, self, "ready", False)  # stopped first: not ready any more
        log.info(
            "herald started",
            extra={
                "database": self.engine.url.render_as_string(hide_password=True),
                "bus": "kafka " + self.settings.kafka_bootstrap
                if self.settings.kafka_bootstrap
                else "in-process",
            },
        )

    def _loaded(self) -> None:
        """One line on what was loaded; one warning more when stored Subscriptions cannot be
        (after an upgrade, or a change of their topic or of the settings)."""
        unloaded = list(self.registry.unloaded.values())
        log.info(
            "subscriptions loaded",
            extra={"subscriptions": len(self.registry.index), "unloaded": len(unloaded)},
        )
        if unloaded or self.registry.unloaded_topics:
            kinds = sorted({item.kind for item in unloaded})
            log.warning(
                "%d stored Subscriptions (and %d SubscriptionTopics) cannot be loaded: they are "
                "in error and matched against nothing; `herald subscriptions unloaded` lists "
                "them with the reason",
                len(unloaded),
                len(self.registry.unloaded_topics),
                extra={"kinds": kinds},
            )

    def _spawn(
        self, stack: AsyncExitStack, name: str, work: Callable[[], Awaitable[object]]
    ) -> None:
        run_in_background(stack, name, work, crashed=self._not_ready)

    def _not_ready(self) -> None:
        self.ready = False

    async def _flush_audit(self) -> None:
        try:
            await self.audit.flush()  # what was recorded up to the end
        except Exception:
            log.exception("audit trail: the last entries could not be written")
