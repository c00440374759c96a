"""Run a command in a pseudo-terminal and read its screen, as a user would see it.

Progress bars only draw on a terminal (tqdm stays silent on a pipe), so the CLI's
progress is tested here: the command's stdin, stdout and stderr are a pty of 120
columns, and everything it writes is collected. `lines()` is what was drawn, split at
each carriage return or newline (a redrawn bar is a new line), without colours or
cursor movements.

    with Terminal([sys.executable, "-m", "agentdata", "export", ...], env=env) as term:
        term.wait_for(r"export orders\\.csv: +25%")
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Sequence
from pathlib import Path

_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]")


class Terminal:
    def __init__(
        self, argv: Sequence[str], *, env: dict[str, str], cwd: Path, columns: int = 120
    ) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
        env = {**env, "COLUMNS": str(columns), "TERM": "xterm"}
        self.proc = subprocess.Popen(
            list(argv), stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd, close_fds=True
        )
        os.close(slave)
        self._master = master
        self._chunks: list[bytes] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self._master, 65536)
            except OSError:  # EIO: the command closed the terminal
                return
            if not data:
                return
            with self._lock:
                self._chunks.append(data)

    def text(self) -> str:
        with self._lock:
            raw = b"".join(self._chunks)
        return _ESCAPES.sub("", raw.decode("utf-8", "replace"))

    def lines(self) -> list[str]:
        """Every line drawn so far (each redraw of a bar is one), trailing blanks removed."""
        return [line.rstrip() for line in re.split(r"\r\n|\r|\n", self.text()) if line.strip()]

    def wait_for(self, pattern: str, timeout: float = 60) -> str:
        """The first drawn line matching `pattern`, waiting for it up to `timeout` s."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            for line in self.lines():
                if regex.search(line):
                    return line
            if self.proc.poll() is not None and not self._reader.is_alive():
                raise AssertionError(
                    f"exited {self.proc.returncode} without {pattern!r}:\n" + self.text()
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"no line matching {pattern!r} in {timeout}s:\n" + self.text())
            time.sleep(0.05)

    def wait(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(5)
        os.close(self._master)

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
