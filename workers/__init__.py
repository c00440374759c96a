"""Background work on Celery (or in-process): Snowflake syncs, exports and cleanup."""
