"""agentdata: a data server for AI agents (core package: state, rules, CLI)."""

__version__ = "0.1.0"
