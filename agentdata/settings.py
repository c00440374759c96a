"""All configuration, from `AGENTDATA_*` variables, a `.env` file, or CLI options.

Every field here is both an environment variable (`AGENTDATA_<NAME>`) and a CLI
option (`--<name-with-dashes>`) on the commands that start processes; the CLI
builds its options from this class, so the two can never drift apart.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Runtime settings for `agentdata serve`, workers and the CLI clients."""

    model_config = SettingsConfigDict(
        env_prefix="AGENTDATA_", env_file=".env", extra="ignore", env_ignore_empty=True
    )

    data_dir: Path = Field(
        Path("./data"),
        description="Directory holding data.duckdb, meta.sqlite3, artefacts and secrets.",
    )
    host: str = Field(
        "127.0.0.1", description="Address both servers bind to (0.0.0.0 in containers)."
    )
    flight_port: int = Field(
        8815, description="Arrow Flight / Flight SQL (gRPC) port; 0 picks a free port."
    )
    http_port: int = Field(8000, description="REST control plane port; 0 picks a free port.")
    admin_token: SecretStr | None = Field(
        None, description="Bootstrap admin token; generated into <data_dir>/admin.token when unset."
    )
    jwt_secret: SecretStr | None = Field(
        None,
        description="HMAC secret for signing tokens; generated into <data_dir>/jwt.secret when unset.",
    )
    demo: bool = Field(
        True,
        description="Load the demo dataset (schema `demo`) on first start with an empty data dir.",
    )
    demo_rows: int = Field(1_000_000, description="Rows in demo.orders, the large demo table.")
    query_timeout_s: float = Field(
        300.0,
        description="Default ceiling on any query's run time, in seconds; tokens may lower it.",
    )
    memory_limit: str = Field(
        "2GB", description="DuckDB memory limit (e.g. 2GB); larger results spill or stream."
    )
    threads: int = Field(0, description="DuckDB worker threads; 0 means one per core.")
    batch_rows: int = Field(65_536, description="Rows per Arrow record batch pulled from DuckDB.")
    max_batch_bytes: int = Field(
        16 * 1024 * 1024,
        description="Upper bound on one streamed batch's size in bytes; larger batches are sliced.",
    )
    max_sql_bytes: int = Field(
        256 * 1024,
        ge=1,
        description="Longest SQL text accepted, in bytes; longer statements are refused.",
    )
    max_generated_bytes: int = Field(
        64 * 1024,
        ge=1,
        description=(
            "Largest value one call of repeat/lpad/rpad/replace/... may build for non-admin "
            "tokens (list builders: this / 8 elements); bigger calls are refused."
        ),
    )
    memory_headroom_bytes: int = Field(
        256 * 1024 * 1024,
        ge=0,
        description=(
            "Resident memory allowed above idle + memory_limit (+2 batches per stream) before "
            "non-admin queries are stopped; 0 turns the memory guard off."
        ),
    )
    result_cache_bytes: int = Field(
        64 * 1024 * 1024,
        ge=0,
        description=(
            "Bytes of query results kept in memory for identical repeated queries (same SQL, "
            "parameters and token scope); any write invalidates; 0 turns the cache off."
        ),
    )
    ticket_ttl_s: float = Field(
        300.0, description="How long a Flight ticket stays redeemable, in seconds."
    )
    started_query_ttl_s: float = Field(
        60.0,
        gt=0,
        description=(
            "How long a query started by GetFlightInfo (any Flight SQL query; a plain Flight "
            "read that streams from its first row) waits for the DoGet of its ticket; then it "
            "is closed (cursor and memory freed) and a later DoGet runs it afresh."
        ),
    )
    token_default_ttl_s: int = Field(
        90 * 24 * 3600, description="Lifetime of a token created without ttl_seconds."
    )
    log_level: str = Field("INFO", description="Log level (DEBUG, INFO, WARNING, ERROR).")
    tls_cert: Path | None = Field(
        None, description="PEM certificate chain for TLS on Flight (and HTTPS); enables TLS."
    )
    tls_key: Path | None = Field(None, description="PEM private key matching tls_cert.")
    tls_client_ca: Path | None = Field(
        None,
        description="PEM CA bundle; when set, Flight requires client certificates (mutual TLS).",
    )
    redis_url: str | None = Field(
        None, description="Redis URL (broker and results); unset runs tasks in-process."
    )
    max_upload_bytes: int = Field(
        10 * 1024**3,
        description="Largest artefact accepted (uploads and exports), in bytes; larger gets 413.",
    )
    artefact_quota_bytes: int = Field(
        50 * 1024**3,
        description="Bytes of live artefacts each token (owner) may keep; 0 means no quota.",
    )
    export_ttl_s: int = Field(
        24 * 3600, description="Lifetime of an export artefact, in seconds (then it expires)."
    )
    upload_idle_timeout_s: float = Field(
        60.0, description="An upload that sends no bytes for this long is aborted (408)."
    )
    # -- tasks: workers, the in-process runner, maintenance ---------------------
    server_url: str | None = Field(
        None,
        description="REST URL of the server, for workers; default http://<host>:<http_port>.",
    )
    flight_url: str | None = Field(
        None,
        description="Flight URL of the server, for workers; default grpc://<host>:<flight_port>.",
    )
    worker_token: SecretStr | None = Field(
        None,
        description="Admin token workers use for scheduled maintenance; default: the admin token.",
    )
    embedded_workers: int = Field(
        2, description="Threads of the in-process task runner (used when redis_url is unset)."
    )
    task_token_ttl_s: int = Field(
        6 * 3600,
        description="Most a task's delegated credential lives; it also ends when its job ends.",
    )
    export_progress_every_s: float = Field(
        0.5, description="How often a running export reports progress and checks for cancel."
    )
    export_max_retries: int = Field(
        2,
        ge=0,
        description="Retries of an export after a transient error (the server unreachable or "
        "restarting, a connection lost).",
    )
    export_retry_backoff_s: int = Field(
        10,
        ge=1,
        description="Backoff factor of export retries, in seconds: retry n waits a random "
        "0..factor*2^(n-1) s (full jitter).",
    )
    export_retry_backoff_max_s: int = Field(
        300, ge=1, description="Longest wait before an export retry, in seconds."
    )
    maintenance_max_retries: int = Field(
        1, ge=0, description="Retries of a maintenance (clean-up) run that failed."
    )
    maintenance_retry_backoff_s: int = Field(
        30,
        ge=1,
        description="Backoff factor of maintenance retries, in seconds (full jitter, at most "
        "5 minutes).",
    )
    maintenance_completed_job_age_s: float = Field(
        24 * 3600, description="Succeeded and cancelled jobs older than this are deleted."
    )
    maintenance_failed_job_age_s: float = Field(
        72 * 3600, description="Failed jobs older than this are deleted."
    )
    maintenance_export_age_s: float = Field(
        24 * 3600, description="Export artefacts older than this are deleted."
    )
    maintenance_stale_after_s: float = Field(
        3600, description="Running jobs without progress for this long are marked failed."
    )
    maintenance_jobs_every_s: float = Field(
        6 * 3600, description="Period of the job clean-up run; 0 turns its schedule off."
    )
    maintenance_exports_every_s: float = Field(
        4 * 3600, description="Period of the export clean-up run; 0 turns its schedule off."
    )
    maintenance_stale_every_s: float = Field(
        15 * 60, description="Period of the stale-job check; 0 turns its schedule off."
    )
    broker_visibility_timeout_s: int | None = Field(
        None,
        description="Seconds before Redis hands an unacknowledged task (its worker died) to "
        "another worker; default max(3600, task_token_ttl_s). Keep it above the longest task "
        "and sync_retry_backoff_max_s.",
    )
    # -- syncs (Snowflake -> tables; see docs/sync.md) --------------------------
    syncs_file: Path | None = Field(
        None, description="YAML file of sync specs, loaded (created or updated) at start."
    )
    sync_max_retries: int = Field(
        3, description="Retries of a sync run after a transient error (network, timeout, 5xx)."
    )
    sync_retry_backoff_s: int = Field(
        30,
        description="Backoff factor of sync retries, in seconds: retry n waits a random "
        "0..factor*2^(n-1) s (full jitter).",
    )
    sync_retry_backoff_max_s: int = Field(
        600, description="Longest wait before a sync retry, in seconds."
    )
    sync_lock_ttl_s: float = Field(
        60.0,
        description="A sync's lock expires this long after its holder stopped refreshing it "
        "(a dead worker); refreshed every third of it.",
    )
    sync_schedule_every_s: float = Field(
        30.0,
        description="How often scheduled syncs are checked for being due; 0 turns schedules off.",
    )
    sync_batch_rows: int = Field(
        65_536, description="Most rows per Arrow batch streamed from Snowflake into the server."
    )
    sync_max_rows_per_s: float = Field(
        0.0, description="Throttle: most rows per second one sync loads; 0 means no limit."
    )
    # -- federation (remote Snowflake tables; see docs/federation.md) -------------
    federation_max_unfiltered_rows: int = Field(
        10_000_000,
        ge=0,
        description="A remote table with more rows than this may not be read by a mixed "
        "(DuckDB + Snowflake) query without a condition pushed down to Snowflake; 0 = no limit.",
    )
    # -- governance: audit and admission (see docs/security.md) -------------------
    audit_enabled: bool = Field(
        True, description="Write one audit record per query (GET /api/v1/audit)."
    )
    audit_sql_max_chars: int = Field(
        4096, ge=0, description="Characters of a query's SQL kept in its audit record."
    )
    audit_retention_s: float = Field(
        30 * 24 * 3600,
        gt=0,
        description="Audit records older than this are deleted by the `audit` maintenance rule.",
    )
    maintenance_audit_every_s: float = Field(
        3600, description="Period of the audit clean-up run; 0 turns its schedule off."
    )
    token_max_concurrent: int = Field(
        32,
        ge=1,
        description="Queries one token may run at once, unless its own max_concurrent says "
        "otherwise; more are refused at once ([resource_exhausted]).",
    )
    max_concurrent_queries: int = Field(
        64,
        ge=1,
        description="Queries the server runs at once (every token together); more wait in "
        "the admission queue.",
    )
    admission_queue: int = Field(
        128,
        ge=0,
        description="Queries that may wait for a slot when max_concurrent_queries run; past "
        "it they are refused at once ([resource_exhausted]).",
    )
    admission_wait_s: float = Field(
        10,
        ge=0,
        description="Longest a query waits in the admission queue before it is refused "
        "([resource_exhausted], with a retry hint).",
    )
    # -- MCP (agents; see docs/agents.md) ----------------------------------------
    mcp_max_result_chars: int = Field(
        20_000,
        ge=1,
        description="Character budget of one MCP query result's rows (as JSON); rows past it "
        "are cut and the result says truncated.",
    )

    # -- derived paths -------------------------------------------------------
    @property
    def db_path(self) -> Path:
        """The DuckDB data database, opened only by `agentdata serve`."""
        return self.data_dir / "data.duckdb"

    @property
    def meta_path(self) -> Path:
        """The meta store (tokens, jobs, artefacts), never reachable from agent SQL."""
        return self.data_dir / "meta.sqlite3"

    @property
    def artefacts_dir(self) -> Path:
        """Artefact files, named by generated id; names and owners live in the meta store."""
        return self.data_dir / "artefacts"

    @property
    def admin_token_path(self) -> Path:
        return self.data_dir / "admin.token"

    @property
    def jwt_secret_path(self) -> Path:
        return self.data_dir / "jwt.secret"

    def resolved_admin_token(self) -> str:
        """The admin token: the setting, else the one kept in the data dir (created once)."""
        if self.admin_token is not None:
            return self.admin_token.get_secret_value()
        return _read_or_create_secret(self.admin_token_path, prefix="adt_")

    def resolved_jwt_secret(self) -> str:
        """The JWT signing secret: the setting, else the one kept in the data dir."""
        if self.jwt_secret is not None:
            return self.jwt_secret.get_secret_value()
        return _read_or_create_secret(self.jwt_secret_path, prefix="")


def _read_or_create_secret(path: Path, *, prefix: str) -> str:
    """Read a secret file, or create it with mode 0600 (never world-readable, even briefly)."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = prefix + secrets.token_urlsafe(32)
    import os

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value
