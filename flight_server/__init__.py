"""Arrow Flight (and Flight SQL) adapter over the agentdata core."""

from flight_server.server import AgentdataFlightServer, build_flight_server

__all__ = ["AgentdataFlightServer", "build_flight_server"]
