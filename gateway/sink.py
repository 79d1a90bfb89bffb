"""Time-series sink: batches of line protocol to InfluxDB / VictoriaMetrics, spooled while the store is away.

`write` returns only once the batch is in the store or on disk in the
spool; that is the point after which ingest may acknowledge the broker.
A store that has not answered within `ack_wait_s` is treated as away: the
batch goes to the spool, and the replay sends it with the longer
`timeout_s` (if the store took the first request after all, it gets the
same points again, which it keeps once). While anything is spooled, new
batches queue behind it, so the store sees points in the order they arrived.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS, WriteApi
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
        # No client-side retries: an unreachable store means "spool now". Two clients, as the synchronous
        # write takes no timeout of its own: one for batches on their way to acknowledgement, one for the replay.
        self._clients = [InfluxDBClient(url=settings.url, token=settings.token.get_secret_value() or "unused",
                                        org=settings.org, timeout=int(wait_s * 1000), retries=False)
                         for wait_s in (settings.ack_wait_s, settings.timeout_s)]
        self._live, self._replay = (client.write_api(write_options=SYNCHRONOUS) for client in self._clients)
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
        for client in self._clients:
            client.close()  # type: ignore[no-untyped-call]  # influxdb_client's close() is unannotated

    @property
    def backlog(self) -> bool:
        return self._backlog

    def _post(self, lines: Sequence[str], writer: WriteApi) -> None:
        writer.write(
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
                    self._post(lines, self._live)
                    self.lines_written += len(lines)
                    return
                except ApiException as e:
                    if e.status is not None and 400 <= e.status < 500 and e.status not in (408, 429):
                        raise SinkRejected(f"store refused the batch: HTTP {e.status} {e.body!r:.300}") from e
                    log.warning("time-series store answered HTTP %s; spooling", e.status)
                except Exception as e:  # connection refused, reset, no answer within ack_wait_s
                    log.warning("time-series store unreachable or slower than %g s (%s); spooling",
                                self.settings.ack_wait_s, type(e).__name__)
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
                self._post(lines, self._replay)
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
