"""The meta store: tokens, jobs, artefact records, sync specs, table stats, descriptions.

A SQLite file beside the data database, deliberately separate from it: DuckDB has
no GRANTs, so anything inside `data.duckdb` is readable by agent SQL. Nothing here
is reachable from a query.

One connection, shared by every thread behind a re-entrant lock: gRPC and the HTTP
server keep replacing their worker threads, and a connection per thread leaked a file
descriptor for each thread that ever ran (thousands under load). Statements here take
microseconds, so serialising them costs nothing that matters; WAL mode lets other
processes (the CLI, a second server reading) proceed while we commit.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Each entry runs once, in order; append new statements, never edit old ones.
MIGRATIONS: list[str] = [
    """CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        tables TEXT,              -- JSON list of glob patterns, NULL = all
        max_rows INTEGER,
        timeout_s REAL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        revoked_at REAL,
        created_by TEXT
    )""",
    """CREATE TABLE table_stats (
        name TEXT PRIMARY KEY,    -- schema.table, lower case
        last_modified REAL NOT NULL,
        last_synced REAL,
        source_snapshot TEXT
    )""",
    """CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,           -- export | sync | maintenance
        state TEXT NOT NULL,          -- queued | running | retrying | succeeded | failed | cancelled
        owner TEXT,                   -- token id of whoever started it
        params TEXT NOT NULL,         -- JSON
        task_id TEXT,                 -- Celery task id, or the in-process runner's
        progress_rows INTEGER NOT NULL DEFAULT 0,
        progress_bytes INTEGER NOT NULL DEFAULT 0,
        percent REAL,
        attempts INTEGER NOT NULL DEFAULT 0,
        result TEXT,                  -- JSON
        error TEXT,                   -- JSON {"step", "code", "message"}
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        started_at REAL,
        updated_at REAL NOT NULL,
        progress_at REAL,
        finished_at REAL
    )""",
    "CREATE INDEX jobs_state ON jobs(state, kind)",
    "CREATE INDEX jobs_created ON jobs(created_at)",
    # Artefacts: the file is <data_dir>/artefacts/<id>; everything else is here.
    """CREATE TABLE artefacts (
        id TEXT PRIMARY KEY,          -- generated; also the file name
        name TEXT NOT NULL,           -- sanitised display name (metadata only)
        content_type TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,         -- hex
        owner TEXT,                   -- token id
        source TEXT NOT NULL,         -- upload | export
        job_id TEXT,                  -- the export job that produced it
        created_at REAL NOT NULL,
        expires_at REAL               -- NULL = never
    )""",
    "CREATE INDEX artefacts_owner ON artefacts(owner, created_at)",
    "CREATE INDEX artefacts_expires ON artefacts(expires_at)",
    # Sync specs (Snowflake -> table); the spec itself is JSON validated by agentdata.syncs.
    """CREATE TABLE syncs (
        name TEXT PRIMARY KEY,
        spec TEXT NOT NULL,           -- JSON
        origin TEXT NOT NULL,         -- api | file
        runs INTEGER NOT NULL DEFAULT 0,
        last_job_id TEXT,
        last_run_at REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    )""",
    # The cost guard: most rows a token's queries may be estimated to scan (NULL = no limit).
    "ALTER TABLE tokens ADD COLUMN max_scan_rows INTEGER",
    # Descriptions agents read (set by admins): column '' is the table's own description.
    """CREATE TABLE descriptions (
        name TEXT NOT NULL,           -- schema.table, lower case
        column_name TEXT NOT NULL,    -- '' for the table itself
        description TEXT NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (name, column_name)
    )""",
    # Every attempt of a job (agentdata.jobs): when it ran, how it ended, its error.
    """CREATE TABLE job_attempts (
        job_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,     -- 1 for the first run
        task_id TEXT,
        started_at REAL NOT NULL,
        ended_at REAL,                -- NULL while it runs
        outcome TEXT NOT NULL,        -- running | retrying | succeeded | failed | cancelled | interrupted
        error TEXT,                   -- JSON {"step", "code", "message"}
        PRIMARY KEY (job_id, attempt)
    )""",
    # Per-token governance (agentdata.governance) and admission (agentdata.admission).
    "ALTER TABLE tokens ADD COLUMN row_filters TEXT",  # JSON {"schema.table": "condition"}
    "ALTER TABLE tokens ADD COLUMN column_masks TEXT",  # JSON {"schema.table": {"col": "mask"}}
    "ALTER TABLE tokens ADD COLUMN max_concurrent INTEGER",
    # A job's delegated credential names its job (agentdata.tokens.delegate); records from
    # before this column are matched once by the name they were given then.
    "ALTER TABLE tokens ADD COLUMN job_id TEXT",
    "UPDATE tokens SET job_id = substr(name, 5, length(name) - 16)"
    " WHERE name LIKE 'job % (delegated)' AND created_by IS NOT NULL",
    "CREATE INDEX tokens_job ON tokens(job_id) WHERE job_id IS NOT NULL",
    # Remote (federated) tables: Snowflake tables queried in place (agentdata.federation).
    """CREATE TABLE remote_tables (
        name TEXT PRIMARY KEY,        -- schema.table, lower case
        schema_name TEXT NOT NULL,
        table_name TEXT NOT NULL,
        source TEXT NOT NULL,         -- DB.SCHEMA.TABLE in Snowflake
        description TEXT,
        columns TEXT NOT NULL,        -- JSON [[name, duckdb_type, snowflake_type], ...]
        rows INTEGER,                 -- as Snowflake counted them at the last refresh
        created_at REAL NOT NULL,
        refreshed_at REAL NOT NULL,
        created_by TEXT
    )""",
    # The audit log (agentdata.audit): one record per query, on every channel.
    """CREATE TABLE audit_log (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        time REAL NOT NULL,
        token_id TEXT NOT NULL,
        token_name TEXT NOT NULL,
        channel TEXT NOT NULL,        -- flight | flightsql | mcp | rest | export
        sql TEXT NOT NULL,            -- truncated to audit_sql_max_chars
        sql_hash TEXT NOT NULL,       -- sha256 of the full text
        tables_read TEXT NOT NULL,    -- JSON list of "schema.table"
        tables_written TEXT NOT NULL,
        rows INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        duration_s REAL NOT NULL,
        outcome TEXT NOT NULL,        -- ok, or the error code
        engine TEXT NOT NULL
    )""",
    "CREATE INDEX audit_log_time ON audit_log(time)",
    "CREATE INDEX audit_log_token ON audit_log(token_id, seq)",
]


class MetaStore:
    """Thread-safe access to the meta SQLite database."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._connection: sqlite3.Connection | None = None
        self._migrate()

    def _conn(self) -> sqlite3.Connection:
        if self._connection is None:
            conn = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._connection = conn
        return self._connection

    def _migrate(self) -> None:
        with self._lock:
            self._migrate_locked()

    def _migrate_locked(self) -> None:
        conn = self._conn()
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        done = row[0] or 0
        for i, ddl in enumerate(MIGRATIONS[done:], start=done + 1):
            with self.transaction() as tx:
                tx.execute(ddl)
                tx.execute("INSERT INTO schema_version VALUES (?)", (i,))

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (serialised in-process; SQLite serialises across processes)."""
        with self._lock:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one write statement in its own transaction; returns rows changed."""
        with self.transaction() as tx:
            return tx.execute(sql, params).rowcount

    def one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        with self._lock:
            row: sqlite3.Row | None = self._conn().execute(sql, params).fetchone()
            return row

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn().execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
