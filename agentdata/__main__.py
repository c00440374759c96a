"""`python -m agentdata` is the `agentdata` command."""

from agentdata.cli import main

main()
