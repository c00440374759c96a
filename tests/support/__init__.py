"""Test harnesses shared across test packages (real subprocesses, not mocks)."""
