"""The data dir is private to the server's user: directories 0700, files 0600.

It holds the database (and its WAL), the meta store (token records, jobs), the
admin token and JWT secret, and every artefact. `serve` makes it so before opening
anything: `private_umask()` for whatever the process creates from then on (DuckDB's
and SQLite's files, spill files, artefacts), and `make_private()` for what an
earlier run, a copy or a restore left with looser modes.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600
#: Clears every group and other bit of whatever the process creates.
UMASK = 0o077


def private_umask() -> int:
    """Set the process umask to 077 (returns the previous one)."""
    return os.umask(UMASK)


def make_private(root: Path) -> int:
    """Create `root` if needed and give it and everything under it private modes.

    Symbolic links are left alone, neither changed nor followed: chmod through a link
    would change its target, wherever that is. An entry another user owns (a volume
    mounted root-owned, say) cannot be changed: it is named in a warning, and the
    server starts anyway. Returns how many modes were changed.
    """
    root.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    changed, refused = _chmod(root, DIR_MODE)
    for parent, dirs, files in os.walk(root):  # os.walk does not descend into links
        for names, mode in ((dirs, DIR_MODE), (files, FILE_MODE)):
            for name in names:
                done, denied = _chmod(Path(parent, name), mode)
                changed, refused = changed + done, refused + denied
    if changed:
        log.warning("data dir %s: tightened the modes of %d entries (0700/0600)", root, changed)
    if refused:
        log.warning(
            "data dir %s: %s entries are another user's and keep their looser modes: %s",
            root,
            len(refused),
            ", ".join(str(p) for p in refused[:10]),
        )
    return changed


def _chmod(path: Path, mode: int) -> tuple[int, list[Path]]:
    """(1 if the mode was changed, else 0; [path] if it could not be)."""
    try:
        st = path.lstat()
    except FileNotFoundError:  # removed while we walked (a temp file)
        return 0, []
    if stat.S_ISLNK(st.st_mode) or stat.S_IMODE(st.st_mode) == mode:
        return 0, []
    try:
        # The root is made private first, so from then on only this user could swap
        # the entry for a link between lstat and chmod.
        os.chmod(path, mode)
    except PermissionError:
        return 0, [path]
    return 1, []
