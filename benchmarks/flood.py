"""A flooding agent for the governance scenario: N threads, each running a heavy query
in a closed loop for a fixed time; a refusal ([resource_exhausted]) waits the retry
hint the server gives, as a well-behaved client would.

    python -m benchmarks.flood URL TOKEN TABLE THREADS SECONDS

Prints READY once connected, then (on stdout) one JSON line:
{"completed": n, "refused": n, "errors": n, "first_error": "..."}.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time

import pyarrow.flight as fl

_RETRY = re.compile(r"retry in about (\d+) s|in about (\d+) s")


def heavy_sql(table: str) -> str:
    """A scan-and-aggregate over the whole table (hundreds of ms on the bench table)."""
    return (
        f"SELECT customer, sum(price * qty) AS revenue, count(DISTINCT ts) AS moments "
        f"FROM {table} GROUP BY customer ORDER BY revenue DESC LIMIT 10"
    )


def main(argv: list[str]) -> int:
    url, token, table, threads, seconds = argv[0], argv[1], argv[2], int(argv[3]), float(argv[4])
    opts = fl.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())])
    counts = {"completed": 0, "refused": 0, "errors": 0, "first_error": ""}
    lock = threading.Lock()
    sql = heavy_sql(table).encode()
    end = time.time() + seconds

    def loop() -> None:
        client = fl.connect(url)
        while time.time() < end:
            try:
                info = client.get_flight_info(fl.FlightDescriptor.for_command(sql), opts)
                client.do_get(info.endpoints[0].ticket, opts).read_all()
                key = "completed"
                wait = 0.0
            except fl.FlightError as e:
                text = str(e)
                key = "refused" if "[resource_exhausted]" in text else "errors"
                m = _RETRY.search(text)
                wait = float(next(g for g in m.groups() if g)) if m else 0.5
                with lock:
                    counts["first_error"] = counts["first_error"] or text[:300]
            with lock:
                counts[key] += 1  # type: ignore[operator]
            if wait:
                time.sleep(min(wait, max(0.0, end - time.time())))
        client.close()

    print("READY", flush=True)
    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    print(json.dumps(counts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
