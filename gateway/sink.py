"""Time-series sink: batches of line protocol to InfluxDB / VictoriaMetrics, spooled while the store is away.

`write` returns only once the batch is in the store or on disk in the
spool; that is the point after which ingest may acknowledge the broker.
While anything is spooled, new batches queue behind it, so the store sees
points in the order they arrived.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from gateway.backoff import Backoff, jitter_down_to_half
from gateway.config import SinkSettings
from gateway.spool import Spool

log = logging.getLogger(__name__)


class SinkRejected(Exception):
    """The store refused the batch itself (4xx): sending it again will not help."""


class TimeSeriesSink:
    def __init__(self, settings: SinkSettings, spool: Spool | None = None) -> None:
        self.settings = settings
        self.spool = spool or Spool(settings.spool_dir)
        # No client-side retries: an unreachable store means "spool now".
        self._client = InfluxDBClient(
            url=settings.url, token=settings.token.get_secret_value() or "unused", org=settings.org,
            timeout=int(settings.timeout_s * 1000), retries=False,
        )
        self._writer = self._client.write_api(write_options=SYNCHRONOUS)
        self._lock = threading.Lock()
        self._backlog = len(self.spool) > 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._replayer: threading.Thread | None = None
        self.lines_written = 0
        self.lines_spooled = 0

    def start(self) -> None:
        self._replayer = threading.Thread(target=self._replay_loop, name="sink-replay", daemon=True)
        self._replayer.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._replayer:
            self._replayer.join(timeout=10)
        self._client.close()  # type: ignore[no-untyped-call]  # influxdb_client's close() is unannotated

    @property
    def backlog(self) -> bool:
        return self._backlog

    def _post(self, lines: Sequence[str]) -> None:
        self._writer.write(
            # One string: the client would otherwise re-serialise each record.
            bucket=self.settings.bucket, org=self.settings.org, record="\n".join(lines),
            # influxdb_client types the parameter as WritePrecision but its members are plain str constants.
            write_precision=WritePrecision.MS,  # type: ignore[arg-type]
        )

    def write(self, lines: Sequence[str]) -> None:
        """Deliver a batch to the store, or to the spool if the store is unreachable."""
        if not lines:
            return
        with self._lock:
            if not self._backlog:
                try:
                    self._post(lines)
                    self.lines_written += len(lines)
                    return
                except ApiException as e:
                    if e.status is not None and 400 <= e.status < 500 and e.status not in (408, 429):
                        raise SinkRejected(f"store refused the batch: HTTP {e.status} {e.body!r:.300}") from e
                    log.warning("time-series store answered HTTP %s; spooling", e.status)
                except Exception as e:  # connection refused, reset, timeout
                    log.warning("time-series store unreachable (%s); spooling", type(e).__name__)
                self._backlog = True
            self.spool.append(lines)
            self.lines_spooled += len(lines)
        self._wake.set()

    def _replay_loop(self) -> None:
        backoff = Backoff(0.5, self.settings.replay_max_backoff_s, jitter=jitter_down_to_half)
        while not self._stop.is_set():
            if not self._backlog:
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                continue
            oldest = self.spool.oldest()
            if oldest is None:
                with self._lock:
                    # Re-check under the lock: write() may have spooled meanwhile.
                    if self.spool.oldest() is None:
                        self._backlog = False
                        log.info("spool drained; writing to the store directly again")
                continue
            segment, lines = oldest
            try:
                self._post(lines)
            except ApiException as e:
                if e.status is not None and 400 <= e.status < 500 and e.status not in (408, 429):
                    log.error("store refused spooled batch %s (HTTP %s); moving it aside", segment.name, e.status)
                    segment.rename(segment.with_suffix(".rejected"))
                    continue
                self._stop.wait(backoff.next_s())
                continue
            except Exception:
                self._stop.wait(backoff.next_s())
                continue
            self.spool.remove(segment)
            self.lines_written += len(lines)
            backoff.reset()
