"""The meta store under many short-lived threads (as gRPC and HTTP workers are)."""

from __future__ import annotations

import threading
from pathlib import Path

import psutil

from agentdata.meta import MetaStore


def test_threads_share_one_connection_and_leak_no_file_descriptors(tmp_path: Path) -> None:
    store = MetaStore(tmp_path / "meta.sqlite3")
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            store.execute(
                "INSERT INTO table_stats (name, last_modified) VALUES (?, ?)", (f"s.t{i}", float(i))
            )
            row = store.one("SELECT last_modified FROM table_stats WHERE name = ?", (f"s.t{i}",))
            assert row is not None
            assert row[0] == float(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    for start in range(0, 300, 30):  # threads come and go, like a server's workers
        threads = [threading.Thread(target=work, args=(i,)) for i in range(start, start + 30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    count = store.one("SELECT count(*) FROM table_stats")
    assert count is not None
    assert count[0] == 300
    open_meta = [f for f in psutil.Process().open_files() if f.path.startswith(str(tmp_path))]
    assert len(open_meta) <= 3, open_meta  # the database, its WAL and shared-memory files
    store.close()
