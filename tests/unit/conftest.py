"""The fast tier: no test here may start a server process.

`make test-fast` runs this directory alone and must stay well under a minute. A real
`agentdata serve` takes seconds to start and belongs to the end-to-end tests; what a
unit test needs is built in process by tests/support/inprocess.py. Starting one here,
directly or through the shared `server` fixtures, fails the test at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NoReturn

import pytest

import tests.conftest
import tests.support.server


def _refuse(*args: object, **kwargs: object) -> NoReturn:
    raise RuntimeError(
        "tests/unit is the fast tier: build the server in process "
        "(tests.support.inprocess), or move this test beside the end-to-end ones"
    )


# Module scope: autouse fixtures run before the other fixtures of their scope, so this
# is in place before a module-scoped `server` fixture could start one; and it is undone
# at the module's end, so end-to-end modules run after it in the same worker still can.
@pytest.fixture(scope="module", autouse=True)
def no_server_processes() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        # tests.conftest imported start_server by name: its `server` fixtures are
        # patched there as well as in the module that defines it.
        for module in (tests.support.server, tests.conftest):
            mp.setattr(module, "start_server", _refuse)
        mp.setattr(tests.support.server, "restart_server", _refuse)
        yield
