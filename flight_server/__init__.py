"""Arrow Flight (and Flight SQL) adapter over the agentdata engine and token verifier."""

from flight_server.server import AgentdataFlightServer, build_flight_server

__all__ = ["AgentdataFlightServer", "build_flight_server"]
