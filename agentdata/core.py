"""The core: one object owning every piece of state, built complete by `Core.open`.

`Core.open(settings, snowflake=..., dispatcher=...)` opens the stores and the engine
and holds the task dispatcher it is given (built by the launcher: Celery or the
in-process runner; without one, `NoDispatcher`). The core is frozen: nothing is set on
it after it is built. Adapters (Flight, REST, MCP) receive the collaborators they use
(the engine, the token service, the job store...), which the launcher takes from the
core; use cases that span several stores (`agentdata.tasks.start_job`, maintenance,
sync runs, `revoke_token`) take the core itself. No adapter opens the database or the
meta store. Tests build a whole core in one line: `Core.open(Settings(data_dir=tmp))`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from agentdata.admission import Admission
from agentdata.artefacts import ArtefactStore
from agentdata.audit import AuditLog
from agentdata.demo import load_demo
from agentdata.engine import Engine
from agentdata.federation import Federation
from agentdata.federation.snowflake import SnowflakeSide
from agentdata.governance import mask_salt
from agentdata.jobs import JobStore
from agentdata.meta import MetaStore
from agentdata.metrics import refresh_store_gauges
from agentdata.settings import Settings
from agentdata.syncs import SyncStore
from agentdata.tasks import Dispatcher, NoDispatcher
from agentdata.tokens import TokenRecord, TokenService

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Core:
    """Everything stateful, shared by the Flight server and the control plane."""

    settings: Settings
    meta: MetaStore
    engine: Engine
    tokens: TokenService
    jobs: JobStore
    artefacts: ArtefactStore
    #: Sync specs (Snowflake -> tables); runs are jobs of kind "sync" (agentdata.sync_runs).
    syncs: SyncStore
    #: Where tasks go: the in-process runner, Celery, or nowhere (see agentdata.tasks).
    dispatcher: Dispatcher

    def revoke_token(self, token_id: str) -> TokenRecord:
        """Revoke a token: its next call is refused, its running queries stop within
        a second (UNAUTHENTICATED) and its queued or running jobs are cancelled."""
        record = self.tokens.revoke(token_id)
        self.engine.stop_token(token_id, "token revoked")
        self.jobs.cancel_owned_by(token_id, reason="the token that started it was revoked")
        return record

    def refresh_gauges(self) -> None:
        """Refresh the gauges cheaper to read than to track, before /metrics renders."""
        refresh_store_gauges(self.jobs, self.artefacts)
        self.dispatcher.refresh_gauges()

    @classmethod
    def open(
        cls,
        settings: Settings,
        *,
        snowflake: SnowflakeSide | None = None,
        dispatcher: Dispatcher | None = None,
    ) -> Core:
        """Open (or create) the data dir; load the demo dataset on a first start.

        `snowflake` lets remote (federated) tables reach Snowflake (the launcher passes
        the sync stages' credentials and type mapping; see agentdata.federation).
        `dispatcher` is where tasks go (None: this core runs no tasks); the caller starts
        it once the core is built (`Dispatcher.start`), since the in-process runner acts
        through the complete core."""
        data_dir = settings.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        first_start = not settings.db_path.exists()
        meta = MetaStore(settings.meta_path)
        engine = Engine(
            settings.db_path,
            meta,
            memory_limit=settings.memory_limit,
            threads=settings.threads,
            temp_dir=data_dir / "tmp",
            batch_rows=settings.batch_rows,
            max_batch_bytes=settings.max_batch_bytes,
            query_timeout_s=settings.query_timeout_s,
            max_sql_bytes=settings.max_sql_bytes,
            max_generated_bytes=settings.max_generated_bytes,
            memory_headroom_bytes=settings.memory_headroom_bytes,
            result_cache_bytes=settings.result_cache_bytes,
            mask_salt=mask_salt(settings.resolved_jwt_secret()),
            audit_log=AuditLog(meta, sql_max_chars=settings.audit_sql_max_chars)
            if settings.audit_enabled
            else None,
            admission=Admission(
                max_concurrent=settings.max_concurrent_queries,
                queue=settings.admission_queue,
                wait_s=settings.admission_wait_s,
                token_default=settings.token_max_concurrent,
            ),
            federation=Federation(
                meta,
                snowflake=snowflake,
                max_unfiltered_rows=settings.federation_max_unfiltered_rows,
                batch_rows=settings.batch_rows,
            ),
        )
        jobs = JobStore(meta)
        tokens = TokenService(
            meta,
            jobs=jobs,
            secret=settings.resolved_jwt_secret(),
            admin_token=settings.resolved_admin_token(),
            default_ttl_s=settings.token_default_ttl_s,
        )
        artefacts = ArtefactStore(
            meta,
            settings.artefacts_dir,
            max_bytes=settings.max_upload_bytes,
            quota_bytes=settings.artefact_quota_bytes,
            export_ttl_s=settings.export_ttl_s,
        )
        # Temp files and orphans left by a crash go before anyone can write again.
        artefacts.reconcile()
        core = cls(
            settings=settings,
            meta=meta,
            engine=engine,
            tokens=tokens,
            jobs=jobs,
            artefacts=artefacts,
            syncs=SyncStore(meta),
            dispatcher=dispatcher if dispatcher is not None else NoDispatcher(),
        )
        if first_start and settings.demo:
            log.info(
                "first start: loading the demo dataset (schema demo, %d orders)", settings.demo_rows
            )
            load_demo(engine, rows=settings.demo_rows)
        if settings.syncs_file is not None:
            try:
                names = core.syncs.load_file(settings.syncs_file)
            except Exception:
                core.close()  # a bad syncs file stops the start, with its message
                raise
            log.info(
                "loaded %d sync spec(s) from %s: %s",
                len(names),
                settings.syncs_file,
                ", ".join(names) or "(none)",
            )
        return core

    def close(self) -> None:
        """Stop queries, checkpoint and close the database, close the meta store."""
        self.engine.close()
        if self.engine.audit is not None:
            self.engine.audit.close()
        self.meta.close()
