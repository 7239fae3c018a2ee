"""Prometheus metrics, served at ``/metrics``, right with one worker or several.

With several workers each process writes its values to files in ``PROMETHEUS_MULTIPROC_DIR``
and a scrape, whichever worker answers it, adds them all up (prometheus_client's multiprocess
mode). ``python -m proxy`` makes that directory when ``--workers`` is above 1 and removes it at
exit (:func:`multiprocess_dir`); prometheus_client reads the variable when it is first imported,
so it must be set before that.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
# Up to the default upstream timeout (30 s): a slow upstream stays visible.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_LIVE_FILE = re.compile(r"gauge_live\w*_(\d+)\.db")


def multiprocess() -> bool:
    return MULTIPROC_ENV in os.environ


class Metrics:
    """The proxy's metrics, in a registry of their own (one per app, so tests can build many)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "smsleads_proxy_requests", "HTTP requests answered, by route template",
            ["route", "method", "status"], registry=self.registry)
        self.duration = Histogram(
            "smsleads_proxy_request_duration_seconds", "Time to answer a request",
            ["route", "method"], buckets=BUCKETS, registry=self.registry)
        self.in_flight = Gauge(
            "smsleads_proxy_requests_in_flight", "Requests being answered now",
            registry=self.registry, multiprocess_mode="livesum")
        self.upstream_calls = Counter(
            "smsleads_proxy_upstream_calls",
            "Calls to the SMS Leads API, by command and upstream <status> (or the failure)",
            ["command", "upstream_status"], registry=self.registry)
        self.upstream_duration = Histogram(
            "smsleads_proxy_upstream_duration_seconds", "Time the SMS Leads API took to answer",
            ["command"], buckets=BUCKETS, registry=self.registry)
        # Webhooks (proxy/events/, issue 13).
        self.webhook_attempts = Counter(
            "smsleads_proxy_webhook_attempts",
            "Webhook attempts, by outcome: delivered (2xx), rejected (another status), "
            "no_answer (timeout, connection), refused (the outbound guard)",
            ["outcome"], registry=self.registry)
        self.webhook_deliveries = Counter(
            "smsleads_proxy_webhook_deliveries",
            "Webhook deliveries finished, by outcome: succeeded or failed",
            ["outcome"], registry=self.registry)
        self.webhook_events = Counter(
            "smsleads_proxy_webhook_events", "Webhook events made, by type", ["type"],
            registry=self.registry)
        self.webhook_lag = Gauge(
            "smsleads_proxy_webhook_feed_lag_seconds",
            "Seconds since the poller last read the operation's rows to the end (most "
            "behind account)", ["source"], registry=self.registry,
            multiprocess_mode="livemax")
        self.account_credits = Gauge(
            "smsleads_proxy_account_credits", "An account's credits, as last polled",
            ["account"], registry=self.registry, multiprocess_mode="livemostrecent")
        # The spend guard (proxy/guard.py): its policy's name, or `unavailable`.
        self.guard_refusals = Counter(
            "smsleads_proxy_guard_refusals",
            "Requests the spend guard refused, by the policy they would have crossed",
            ["reason"], registry=self.registry)
        # Each combination's counter and histogram, looked up once: labels() on every request
        # took a lock, checked the values and built a key, twice a request (bench/RESULTS.md).
        self._answered: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._called: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    def answered(self, route: str, method: str, status: int, seconds: float) -> None:
        """One request answered."""
        key = (route, method, status)
        series = self._answered.get(key)
        if series is None:
            series = self._answered[key] = (self.requests.labels(route, method, str(status)),
                                            self.duration.labels(route, method))
        series[0].inc()
        series[1].observe(seconds)

    def called(self, command: str, status: str, seconds: float) -> None:
        """One call to the upstream, by its <status> or its failure."""
        key = (command, status)
        series = self._called.get(key)
        if series is None:
            series = self._called[key] = (self.upstream_calls.labels(command, status),
                                          self.upstream_duration.labels(command))
        series[0].inc()
        series[1].observe(seconds)

    def exposition(self) -> bytes:
        if not multiprocess():
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)


def forget_dead_workers() -> None:
    """Drop the in-flight gauges of workers that died (uvicorn restarts them without telling
    prometheus_client, whose `livesum` would otherwise keep counting their last value)."""
    if not multiprocess():
        return
    for path in Path(os.environ[MULTIPROC_ENV]).iterdir():
        found = _LIVE_FILE.fullmatch(path.name)
        if found and not _alive(int(found.group(1))):
            prometheus_multiprocess.mark_process_dead(int(found.group(1)))  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def multiprocess_dir(workers: int) -> Iterator[str | None]:
    """With several workers, a fresh metrics directory for this run, removed at exit; one set
    by the operator is used as it is (and left for them to clear, as prometheus_client asks)."""
    if workers <= 1 or multiprocess():
        yield os.environ.get(MULTIPROC_ENV)
        return
    path = tempfile.mkdtemp(prefix="smsleads-proxy-metrics-")
    os.environ[MULTIPROC_ENV] = path
    try:
        yield path
    finally:
        del os.environ[MULTIPROC_ENV]
        shutil.rmtree(path, ignore_errors=True)
