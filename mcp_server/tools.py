"""What each MCP tool does, over the engine and the job store, for one calling token.

Each method takes the caller's `Principal` and the tool's arguments and returns an
`Answer`: the structured content (a dict shaped like the tool's output model in
`mcp_server.models`) and a one-line summary for the text block. They raise
`agentdata.errors`; `mcp_server.server` turns those into tool errors once.

Every read goes through the engine exactly like Flight's: the same guard, allow-list,
read-only transaction, timeouts, max_rows, cost guard and freshness.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol

from agentdata.engine import Engine, StreamOptions, TableInfo
from agentdata.errors import InvalidArgument
from agentdata.export_runs import StartedExport
from agentdata.freshness import read_freshness
from agentdata.governance import mask_of, masked_type
from agentdata.jobs import JobStore
from agentdata.names import parse_table_ref, qualified, quote_ident
from agentdata.tokens import Principal
from mcp_server import values

#: Sample rows `describe_table` shows.
SAMPLE_ROWS = 5
#: Where a finished export's file is downloaded (REST, same token).
DOWNLOAD_PATH = "/api/v1/artefacts/{id}/content"


@dataclass(frozen=True)
class Answer:
    """A tool's result: structured content and a short text summary."""

    data: dict[str, Any]
    summary: str


class StartExport(Protocol):
    """Queue an export job (`agentdata.export_runs.start_export` bound to the core)."""

    def __call__(
        self, principal: Principal, sql: str, *, fmt: str, truncate: bool
    ) -> StartedExport: ...


class AgentTools:
    """The MCP tools (shared by every session and token), over the collaborators they
    use: the engine, the job store, how to start an export, the result budget and the
    Flight URL the hints name (None when unknown)."""

    def __init__(
        self,
        engine: Engine,
        jobs: JobStore,
        *,
        start_export: StartExport,
        max_result_chars: int,
        flight_url: str | None = None,
    ) -> None:
        self.engine = engine
        self.jobs = jobs
        self.start_export = start_export
        self.max_result_chars = max_result_chars
        self.flight_url = flight_url

    # -- discovery -----------------------------------------------------------------
    def list_tables(self, principal: Principal) -> Answer:
        tables = [_listed(t) for t in self.engine.list_tables(principal)]
        return Answer({"tables": tables}, f"{len(tables)} table(s) this token may read")

    def readable_tables(self, principal: Principal) -> list[str]:
        """ "schema.name" of every table the token may read (for hints and resources)."""
        return [qualified(t.schema, t.name) for t in self.engine.list_tables(principal)]

    def describe_table(self, principal: Principal, table: str) -> Answer:
        engine = self.engine
        schema, name = parse_table_ref(table)
        info = engine.table_info(principal, schema, name)
        types = engine.column_types(info.schema, info.name)
        nullable = engine.column_nullability(info.schema, info.name)
        keys = {c for _, _, c, _ in engine.primary_keys(principal, info.schema, info.name)}
        columns = [
            {
                "name": f.name,
                "type": masked_type(f, types.get(f.name, str(f.type))),
                "nullable": nullable.get(f.name, f.nullable),
                "primary_key": f.name in keys,
                "description": info.column_descriptions.get(f.name),
                "mask": mask_of(f),
            }
            for f in info.arrow_schema
        ]
        samples = self._samples(principal, info)
        data = {
            "table": qualified(info.schema, info.name),
            "kind": info.kind,
            "description": info.description,
            "rows": info.rows,
            "columns": columns,
            "freshness": info.freshness,
            "sample_rows": samples.rows,
        }
        return Answer(data, f"{data['table']}: {len(columns)} column(s), {info.rows} row(s)")

    def _samples(self, principal: Principal, info: TableInfo) -> values.Page:
        # The server picks this read (a few rows, a streaming LIMIT): the token's cost
        # budget is for its own SQL, so it does not apply here; everything else does.
        sampler = dataclasses.replace(principal, max_scan_rows=None)
        sql = (
            f"SELECT * FROM {quote_ident(info.schema)}.{quote_ident(info.name)} LIMIT {SAMPLE_ROWS}"
        )
        stream = self.engine.open_stream(
            sampler, sql, StreamOptions(truncate=True, reads_only=True)
        )
        try:
            return values.collect(stream, stream.schema, self.max_result_chars)
        finally:
            stream.close()

    # -- queries -------------------------------------------------------------------
    def query(self, principal: Principal, sql: str, max_rows: int) -> Answer:
        if max_rows < 1:
            raise InvalidArgument("max_rows must be at least 1")
        cap = min(max_rows, principal.max_rows) if principal.max_rows else max_rows
        options = StreamOptions(truncate=True, max_rows=cap, reads_only=True)
        budget = self.max_result_chars
        stream = self.engine.open_stream(principal, sql, options)
        try:
            page = values.collect(stream, stream.schema, budget)
        finally:
            stream.close()  # stops DuckDB at once when the page ended early
        why = None
        if page.cut:
            why = "characters"
        elif options.truncated:
            why = "token_max_rows" if cap < max_rows else "max_rows"
        names = values.column_names(stream.schema)
        data = {
            "columns": [
                {"name": n, "type": str(f.type)} for n, f in zip(names, stream.schema, strict=True)
            ],
            "rows": page.rows,
            "row_count": len(page.rows),
            "truncated": why is not None,
            "freshness": read_freshness(stream.schema),
            "next": self._next(sql, why, cap, budget) if why else None,
        }
        summary = f"{len(page.rows)} row(s)" + (f", truncated ({why})" if why else "")
        return Answer(data, summary)

    def _next(self, sql: str, why: str, cap: int, budget: int) -> dict[str, Any]:
        """How to get the whole result when a cap cut it."""
        cut = {
            "characters": f"the rows passed this server's {budget:,}-character budget",
            "max_rows": f"the result has more than max_rows ({cap}) rows",
            "token_max_rows": f"the result has more than this token's max_rows ({cap}) rows, "
            "which applies on every channel",
        }[why]
        return {
            "reason": why,
            "hint": f"{cut}: call export with this sql for the whole result as a file "
            "(then job_status for its download path), run it over Flight SQL, or narrow "
            "the query (fewer columns, filters, aggregates, LIMIT/OFFSET)",
            "export": {"sql": sql, "format": "parquet"},
            "flight_sql": {"uri": self.flight_url, "query": sql},
        }

    def explain(self, principal: Principal, sql: str) -> Answer:
        stmt, estimate = self.engine.estimate(principal, sql)
        budget = principal.max_scan_rows
        data = {
            "plan": estimate.plan,
            "estimated_rows": estimate.rows,
            "scanned_rows": estimate.scanned_rows,
            "peak_rows": estimate.peak_rows,
            "max_scan_rows": budget,
            "within_budget": budget is None or estimate.rows <= budget,
            "tables": sorted(stmt.tables),
        }
        verdict = (
            ""
            if budget is None
            else (
                " (within budget)" if data["within_budget"] else f" (over the budget of {budget:,})"
            )
        )
        return Answer(data, f"estimated {estimate.rows:,} row(s){verdict}")

    # -- jobs ----------------------------------------------------------------------
    def export(self, principal: Principal, sql: str, fmt: str, truncate: bool = False) -> Answer:
        started = self.start_export(principal, sql, fmt=fmt, truncate=truncate)
        data = {
            "job_id": started.job.id,
            "state": started.job.state,
            "format": started.spec.format,
            "columns": [{"name": f.name, "type": str(f.type)} for f in started.schema],
        }
        return Answer(data, f"export job {started.job.id} {started.job.state}: poll job_status")

    def job_status(self, principal: Principal, job_id: str) -> Answer:
        job = self.jobs.get_for(principal, job_id)
        result = job.result or {}
        artefact = None
        if job.state == "succeeded" and result.get("artefact_id"):
            artefact = {
                "id": result["artefact_id"],
                "name": result.get("name"),
                "bytes": result.get("bytes"),
                "rows": result.get("rows"),
                "sha256": result.get("sha256"),
                "content_type": result.get("content_type"),
                "download_path": DOWNLOAD_PATH.format(id=result["artefact_id"]),
            }
        data = {
            "job_id": job.id,
            "kind": job.kind,
            "state": job.state,
            "progress": {
                "rows": job.progress_rows,
                "bytes": job.progress_bytes,
                "percent": job.percent,
            },
            "error": job.error,
            "artefact": artefact,
        }
        return Answer(data, f"job {job.id}: {job.state}")

    # -- resources -----------------------------------------------------------------
    def table_resource(self, principal: Principal, schema: str, name: str) -> dict[str, Any]:
        """A table's schema as the resource `agentdata://table/{schema}/{name}` shows it."""
        info = self.engine.table_info(principal, schema, name)
        types = self.engine.column_types(info.schema, info.name)
        return {
            "table": qualified(info.schema, info.name),
            "kind": info.kind,
            "description": info.description,
            "rows": info.rows,
            "columns": [
                {
                    "name": f.name,
                    "type": masked_type(f, types.get(f.name, str(f.type))),
                    "description": info.column_descriptions.get(f.name),
                    "mask": mask_of(f),
                }
                for f in info.arrow_schema
            ],
            "freshness": info.freshness,
        }


def _listed(t: TableInfo) -> dict[str, Any]:
    return {
        "table": qualified(t.schema, t.name),
        "kind": t.kind,
        "rows": t.rows,
        "columns": len(t.arrow_schema),
        "description": t.description,
        # Every table is local to this server today (DuckDB); federated tables would
        # say "remote".
        "location": "local",
        "freshness": t.freshness,
    }
