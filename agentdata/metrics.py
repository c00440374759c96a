"""Prometheus metrics, registered once and updated by the adapters and the core.

Served at `/metrics` by the control plane (the same process as the Flight server).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
ACTIVE_STREAMS = Gauge("agentdata_active_streams", "Result streams open now.", registry=REGISTRY)
ROWS_INGESTED = Counter(
    "agentdata_rows_ingested_total", "Rows written by DoPut/ingest.", registry=REGISTRY
)
