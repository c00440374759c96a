"""Federation: Snowflake tables that are not synced, queried where they live.

    catalog    remote table declarations (meta store) and their placeholder tables
    translate  DuckDB SQL -> Snowflake SQL (sqlglot): whole pushdown, remote scans
    snowflake  the connection pool, running a statement, cancelling it, its errors
    router     `Federation`: declares tables and routes each checked read

See docs/federation.md for when to sync and when to federate.
"""

from agentdata.federation.catalog import RemoteColumn, RemoteTable
from agentdata.federation.router import ENGINE_KEY, QUERY_ID_KEY, Federation

__all__ = ["ENGINE_KEY", "QUERY_ID_KEY", "Federation", "RemoteColumn", "RemoteTable"]
