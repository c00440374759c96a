"""REST control plane (FastAPI) over the agentdata core."""

from control_api.app import create_app

__all__ = ["create_app"]
