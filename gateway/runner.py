"""The gateway process: two MQTT sessions, their ingest workers, the sink and the store."""
from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.claim_notice import ClaimNotices
from gateway.config import CoreSettings
from gateway.edge_process import ChildProcessSession
from gateway.ingest import DeviceRegistry, IngestPipeline, IngestWorker
from gateway.models import CRITICAL_STREAMS
from gateway.mqtt_edge import MqttSession, Received
from gateway.mqtt_receiver import receiving_session
from gateway.observer import MessageObserver
from gateway.priority import Priority
from gateway.sink import TimeSeriesSink
from gateway.store import OperationalStore
from gateway.store_process import StoreProcess
from gateway.topics import Topics

log = logging.getLogger(__name__)

# Write-ahead log pages after which a lane's commit copies the log back into the store's file (SQLite).
# The telemetry lane does it for both at 20,000 pages (80 MB): a page many batches changed is then
# copied once, and at a million devices a batch's commit took 58 us a message instead of 89 with
# SQLite's 1,000. The critical lane never does, so an SOS never waits for a checkpoint.
_CHECKPOINT_PAGES = {"critical": 0, "telemetry": 20_000}


class Session(Protocol):
    """What a lane needs of its MQTT session: MqttSession, MqttReceiver, or ChildProcessSession running one in a child."""

    connected: threading.Event

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def ack(self, batch: Sequence[Received]) -> None: ...


@dataclass(frozen=True, slots=True)
class LaneStatus:
    connected: bool          # its MQTT session is connected to the broker
    inbox: int               # messages received and not yet taken into a batch
    lag_s: float             # the last batch's arrival-to-acknowledgement time
    counts: dict[str, int]   # received, accepted, duplicates, ignored
    dead_letters: dict[str, int]


@dataclass(frozen=True, slots=True)
class GatewayStatus:
    """What monitoring asks of the ingest side: the lanes, the time-series sink and the operational store."""

    lanes: dict[str, LaneStatus]
    sink_written: int        # lines the time-series store took
    sink_spooled: int        # lines that went to the disk spool instead
    spool_segments: int      # spool files waiting to be replayed
    store_ok: bool

    @property
    def broker_connected(self) -> bool:
        return all(lane.connected for lane in self.lanes.values())


class Gateway:
    """Critical streams (sos, fall, service_call) get their own session, inbox and worker,
    so a telemetry backlog never delays them."""

    def __init__(self, settings: CoreSettings, observer: MessageObserver | None = None,
                 priority: Priority | None = None) -> None:
        self.settings = settings
        # Held from a critical message's arrival to its acknowledgement (and by the dispatcher while a red
        # notification is being sent); the telemetry lane steps aside meanwhile.
        self.priority = priority or Priority()
        self.topics = Topics(settings.mqtt.topic_prefix)
        self.store = OperationalStore(settings.store.database, settings.exercise.claim_ttl_s)
        self.sink = TimeSeriesSink(settings.sink)
        prefix = self.topics.prefix
        critical_topics = self.topics.streams(CRITICAL_STREAMS)

        def is_critical(topic: str) -> bool:
            return self.topics.is_critical(topic, CRITICAL_STREAMS)

        status_topic = self.topics.gateway_status(settings.instance)

        gateway_topics = f"{prefix}/gateway/"   # this instance's status and its peers'

        def not_device_data(topic: str) -> bool:
            return topic.startswith(gateway_topics) or self.topics.is_command(topic)

        ing = settings.ingest
        self.registry = DeviceRegistry(self.store, ing.auto_register)
        self.lanes: list[tuple[Session, IngestWorker]] = []
        self._commands: MqttSession | None = None   # the critical lane's session also sends commands to devices
        self.notices = ClaimNotices(self.topics, settings.exercise.claim_url, self._send_command)
        for lane, subscriptions, skip, batch, linger in (
            ("critical", critical_topics, not_device_data, 50, 0),
            # The telemetry session sees everything under the prefix (so an
            # unknown stream is dead-lettered, not unheard) and leaves the
            # critical streams to their own session.
            ("telemetry", [f"{prefix}/#"], lambda t: not_device_data(t) or is_critical(t), ing.batch_size, ing.batch_linger_ms),
        ):
            inbox: queue.SimpleQueue[Received] = queue.SimpleQueue()
            client_id = f"{settings.mqtt.client_id}-{lane}"
            session: Session
            if lane == "critical":
                session = self._commands = MqttSession(settings.mqtt, client_id, subscriptions, inbox, status_topic,
                                                       functools.partial(self.priority.hold, lane))
            elif ing.network_process:
                session = ChildProcessSession(settings.mqtt, client_id, subscriptions, inbox,
                                              settings.mqtt.telemetry_protocol, self.priority)
            else:
                session = receiving_session(settings.mqtt, client_id, subscriptions, inbox, settings.mqtt.telemetry_protocol)
            pipeline = IngestPipeline(self.topics, self.store, self.sink, ing, observer=observer, skip=skip,
                                      announce=self.notices, registry=self.registry,
                                      checkpoint_pages=_CHECKPOINT_PAGES[lane], lane=lane)
            self.lanes.append((session, IngestWorker(lane, inbox, pipeline, session.ack, batch, linger,
                                                     self.priority, urgent=lane == "critical")))
        # The telemetry lane's commits, in a child process when set (gateway/store_process.py).
        self.store_process = (StoreProcess(settings.store.database, settings.exercise.claim_ttl_s,
                                           _CHECKPOINT_PAGES["telemetry"]) if ing.store_process else None)
        self._stop = threading.Event()
        self._housekeeping: threading.Thread | None = None

    def start(self) -> None:
        self.sink.start()
        # A fence (the active lock on PostgreSQL) runs in the committing transaction, in this process.
        if self.store_process is not None and self.store.fence is None:
            self.store_process.start()
            for _, worker in self.lanes:
                if worker.name == "telemetry":
                    worker.pipeline.commit_rows = self.store_process.commit
        for session, worker in self.lanes:
            worker.start()
            session.start()
        self._housekeeping = threading.Thread(target=self._housekeep, name="housekeeping", daemon=True)
        self._housekeeping.start()

    def wait_connected(self, timeout_s: float = 10) -> bool:
        return all(session.connected.wait(timeout_s) for session, _ in self.lanes)

    def stop(self) -> None:
        self._stop.set()
        for session, worker in self.lanes:
            session.stop()
            worker.stop()
        if self.store_process is not None:
            self.store_process.stop()
        self.sink.close()

    def stats(self) -> dict[str, dict[str, int | dict[str, int]]]:
        return {lane.name: lane.pipeline.stats.as_dict() for _, lane in self.lanes} | {
            "sink": {"written": self.sink.lines_written, "spooled": self.sink.lines_spooled, "backlog": self.sink.backlog}
        }

    def status(self) -> GatewayStatus:
        lanes = {}
        for session, worker in self.lanes:
            stats = worker.pipeline.stats
            lanes[worker.name] = LaneStatus(session.connected.is_set(), worker.inbox.qsize(), worker.lag_s,
                                            stats.counts(), dict(stats.dead_letters))
        return GatewayStatus(lanes, self.sink.lines_written, self.sink.lines_spooled, len(self.sink.spool),
                             self.store.ping())

    def _send_command(self, topic: str, payload: bytes) -> None:
        if self._commands is not None:
            self._commands.publish(topic, payload, qos=1)

    def close_idle_sessions(self, now_ms: int) -> None:
        """Exercise sessions whose machine went quiet without `end` close now; their machines are told."""
        news = self.store.close_idle_sessions(now_ms, int(self.settings.exercise.idle_close_s * 1000))
        if news:
            log.info("closed %d idle exercise session(s)", len(news))
            self.notices(news)

    def _housekeep(self) -> None:
        store = self.settings.store
        beat = 0
        while not self._stop.wait(15):
            try:
                self.close_idle_sessions(int(time.time() * 1000))
            except Exception:
                log.exception("closing idle exercise sessions failed")
            beat += 1
            if beat % 4:
                continue
            try:
                now = time.time()
                removed = self.store.prune(int(now * 1000), int(store.track_window_h * 3_600_000),
                                           int(store.dedup_window_h * 3_600_000),
                                           int(store.dead_letter_retention_days * 86_400_000))
                removed["rejected_batches"] = self.sink.spool.prune_rejected(
                    now, self.settings.sink.rejected_retention_days * 86_400)
                if any(removed.values()):
                    log.info("housekeeping: pruned %s", removed)
                log.info("stats: %s", self.stats())
            except Exception:
                log.exception("housekeeping failed")
