"""Snowflake sync, in stages that depend only on the core package:

- `credentials`: who we are to Snowflake (`SNOWFLAKE_*` variables or a secrets file);
- `types`: the Snowflake → DuckDB type mapping and the per-batch Arrow conversion;
- `extract`: Snowflake → Arrow record batches, with errors sorted into transient and
  terminal at the source.

The planner, the loader (DoPut into the server) and the Celery task build on these.
"""
