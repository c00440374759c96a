"""Prometheus metrics, registered once and updated by the adapters and the core.

Served at `/metrics` by the control plane (the same process as the Flight server).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from agentdata.artefacts import ArtefactStore
    from agentdata.jobs import JobStore

REGISTRY = CollectorRegistry(auto_describe=True)

QUERIES = Counter(
    "agentdata_queries_total",
    "Queries run, by protocol and outcome.",
    ["protocol", "outcome"],
    registry=REGISTRY,
)
ROWS_STREAMED = Counter(
    "agentdata_rows_streamed_total", "Rows sent to clients.", ["protocol"], registry=REGISTRY
)
BYTES_STREAMED = Counter(
    "agentdata_bytes_streamed_total",
    "Arrow bytes sent to clients.",
    ["protocol"],
    registry=REGISTRY,
)
QUERY_SECONDS = Histogram(
    "agentdata_query_duration_seconds",
    "Wall time of a query from start of stream to its end.",
    ["protocol"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
TOKEN_QUERIES = Counter(
    "agentdata_token_queries_total",
    "Queries run (every channel), by token name and outcome (ok / error).",
    ["token", "outcome"],
    registry=REGISTRY,
)
TOKEN_ROWS = Counter(
    "agentdata_token_rows_total", "Rows returned, by token name.", ["token"], registry=REGISTRY
)
TOKEN_ERRORS = Counter(
    "agentdata_token_errors_total",
    "Queries that ended in an error, by token name and error code.",
    ["token", "code"],
    registry=REGISTRY,
)
ADMISSION_WAITING = Gauge(
    "agentdata_admission_waiting", "Queries waiting for a slot now.", registry=REGISTRY
)
ADMISSION_REFUSED = Counter(
    "agentdata_admission_refused_total",
    "Queries refused by admission, by reason (token / server).",
    ["reason"],
    registry=REGISTRY,
)
ACTIVE_STREAMS = Gauge("agentdata_active_streams", "Result streams open now.", registry=REGISTRY)
ROWS_INGESTED = Counter(
    "agentdata_rows_ingested_total", "Rows written by DoPut/ingest.", registry=REGISTRY
)
ARTEFACT_BYTES = Gauge(
    "agentdata_artefact_bytes",
    "Bytes of stored artefacts (including expired ones awaiting cleanup), by source.",
    ["source"],
    registry=REGISTRY,
)
ARTEFACTS = Gauge(
    "agentdata_artefacts", "Stored artefacts, by source.", ["source"], registry=REGISTRY
)
JOBS = Gauge("agentdata_jobs", "Jobs by kind and state.", ["kind", "state"], registry=REGISTRY)
TASK_QUEUE_DEPTH = Gauge(
    "agentdata_task_queue_depth",
    "Tasks waiting, by queue (the in-process runner's, or the broker's with Redis).",
    ["queue"],
    registry=REGISTRY,
)
TASKS_RUNNING = Gauge(
    "agentdata_tasks_running",
    "Tasks running now in this server's in-process runner, by queue.",
    ["queue"],
    registry=REGISTRY,
)


def refresh_store_gauges(jobs: JobStore, artefacts: ArtefactStore) -> None:
    """Set the job and artefact gauges from the meta store (cheaper than tracking them)."""
    from agentdata.artefacts import SOURCES
    from agentdata.jobs import JobState
    from agentdata.tasks import JOB_KINDS

    rows: Iterable[tuple[str, str, int]] = jobs.count_by_kind_state()
    counts = {(k, s): n for k, s, n in rows}
    kinds = {k for k, _ in counts} | set(JOB_KINDS)
    for kind in kinds:
        for state in JobState:
            JOBS.labels(kind, state.value).set(counts.get((kind, state.value), 0))
    by_source = artefacts.bytes_by_source()
    for source in {*SOURCES, *by_source}:
        count, nbytes = by_source.get(source, (0, 0))
        ARTEFACTS.labels(source).set(count)
        ARTEFACT_BYTES.labels(source).set(nbytes)


CACHE_REQUESTS = Counter(
    "agentdata_result_cache_requests_total",
    "Results-cache lookups, by outcome (hit or miss).",
    ["outcome"],
    registry=REGISTRY,
)
CACHE_EVICTIONS = Counter(
    "agentdata_result_cache_evictions_total",
    "Results-cache entries evicted to stay within its byte bound.",
    registry=REGISTRY,
)
CACHE_BYTES = Gauge(
    "agentdata_result_cache_bytes", "Bytes held by the results cache.", registry=REGISTRY
)
REMOTE_QUERIES = Counter(
    "agentdata_remote_queries_total",
    "Statements sent to Snowflake for federated reads, by the result's engine "
    "(snowflake: pushed down whole; mixed: a remote scan joined in DuckDB).",
    ["engine"],
    registry=REGISTRY,
)
REMOTE_ROWS = Counter(
    "agentdata_remote_rows_total",
    "Rows received from Snowflake by federated reads.",
    registry=REGISTRY,
)
REMOTE_BYTES = Counter(
    "agentdata_remote_bytes_total",
    "Arrow bytes received from Snowflake by federated reads.",
    registry=REGISTRY,
)
REMOTE_ERRORS = Counter(
    "agentdata_remote_errors_total",
    "Federated reads that failed, by error code (refused before running included).",
    ["code"],
    registry=REGISTRY,
)
