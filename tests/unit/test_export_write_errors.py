"""Export write failures: local I/O is transient (retried by the export policy), anything
else is not."""

from __future__ import annotations

import errno

from agentdata.errors import InternalError, Unavailable
from agentdata.retries import export_policy
from agentdata.settings import Settings
from workers.exports import _write_error


def test_local_io_errors_are_retried_and_bugs_are_not(tmp_path) -> None:
    policy = export_policy(Settings(data_dir=tmp_path))
    disk_full = _write_error(OSError(errno.ENOSPC, "No space left on device"), "cannot write csv")
    assert isinstance(disk_full, Unavailable) and "No space left" in disk_full.message
    assert policy.retryable(disk_full)
    bug = _write_error(TypeError("unexpected"), "cannot write csv")
    assert isinstance(bug, InternalError) and not policy.retryable(bug)
