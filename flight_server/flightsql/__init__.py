"""Flight SQL on the same port as plain Flight, with the same tokens, limits and SQL checks.

Modules:
    service     FlightSqlService: routes Flight SQL commands, tickets and actions
    messages    Any-wrapped Flight SQL messages (generated bindings in proto/)
    catalog     catalogs, schemas, tables, table types, primary keys (allow-list aware)
    sqlinfo     CommandGetSqlInfo values (read-only per token) and their union encoding
    xdbc        CommandGetXdbcTypeInfo rows for DuckDB's types
    prepared    prepared statements held server-side, bound to their token
    params      parameter values bound by DoPut -> value sets for DuckDB
    started     queries started by GetFlightInfo, waiting for their DoGet
    disconnect  stops a query whose client went away mid-computation
    schemas     the spec's fixed result schemas
"""

from __future__ import annotations

from flight_server.flightsql.service import FlightSqlService

__all__ = ["FlightSqlService"]
