"""Names: how schema/table names are split, quoted, validated and matched against a
token's allow-list.

A qualified name is always handled as its two parts, `(schema, table)`, never as one
dotted string: schema `crm.x` with table `t` and schema `crm` with table `x.t` are
different tables, and a pattern such as `crm.*` must match neither. Patterns are
`schema.table` where each part is a glob (`*`, `?`, `[...]`) matched against that
part alone, case-insensitively: `crm.*` is any table directly in schema `crm`.

Every name a client introduces (schemas, tables, token and artefact names) passes
`validate_name`: no control characters and at most 255 bytes of UTF-8.
"""

from __future__ import annotations

import fnmatch
import unicodedata
from collections.abc import Iterable

from agentdata.errors import InvalidArgument

#: The most bytes (UTF-8) a schema, table, token or artefact name may have.
MAX_NAME_BYTES = 255


def validate_name(name: str, what: str = "name") -> str:
    """Return `name` if it is a usable name, else raise InvalidArgument saying why."""
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"{what} must be a non-empty string")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise InvalidArgument(f"{what} is longer than {MAX_NAME_BYTES} bytes")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in name):
        raise InvalidArgument(f"{what} contains a control character")
    return name


def split_identifier(name: str) -> list[str]:
    """Split a dotted identifier, honouring double quotes (`"a.b".c` has two parts)."""
    parts: list[str] = []
    cur: list[str] = []
    quoted = False
    i = 0
    while i < len(name):
        ch = name[i]
        if ch == '"':
            if quoted and i + 1 < len(name) and name[i + 1] == '"':
                cur.append('"')
                i += 1
            else:
                quoted = not quoted
        elif ch == "." and not quoted:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def quote_ident(name: str) -> str:
    """Quote one identifier for DuckDB."""
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, table: str) -> str:
    """`schema.table` for messages and keys; parts that need it are quoted, so the
    string splits back into the same two parts."""

    def part(p: str) -> str:
        return p if p and all(c.isalnum() or c == "_" for c in p) else quote_ident(p)

    return f"{part(schema)}.{part(table)}"


def parse_table_ref(ref: str) -> tuple[str, str]:
    """`schema.table` (quotes allowed) -> (schema, table); a bare name is in `main`."""
    parts = split_identifier(ref.strip())
    if len(parts) == 1:
        parts = ["main", parts[0]]
    if len(parts) != 2 or not all(parts):
        raise InvalidArgument(f"table must be 'schema.table' (got {ref!r})")
    validate_name(parts[0], "schema name")
    validate_name(parts[1], "table name")
    return parts[0], parts[1]


def parse_pattern(pattern: str) -> tuple[str, str]:
    """An allow-list entry -> (schema glob, table glob), lower case.

    `crm.*` -> ("crm", "*"); a bare `orders` means `main.orders`; `*` alone means every
    table in every schema (`*.*`).
    """
    if not isinstance(pattern, str) or not pattern.strip():
        raise InvalidArgument("tables must be a list of non-empty 'schema.table' patterns")
    validate_name(pattern, "table pattern")
    if pattern.strip() == "*":
        return "*", "*"
    parts = split_identifier(pattern.strip())
    if len(parts) == 1:
        parts = ["main", parts[0]]
    if len(parts) != 2 or not all(parts):
        raise InvalidArgument(f"table pattern must be 'schema.table' (got {pattern!r})")
    return parts[0].lower(), parts[1].lower()


def matches(patterns: Iterable[tuple[str, str]], schema: str, table: str) -> bool:
    """True if (schema, table) matches any parsed pattern, part by part."""
    s, t = schema.lower(), table.lower()
    return any(fnmatch.fnmatchcase(s, ps) and fnmatch.fnmatchcase(t, pt) for ps, pt in patterns)


def binder_table_parts(name: str) -> tuple[str, str]:
    """A table name as DuckDB's binder reports it (`cursor.get_table_names(...,
    qualified=True)`) -> (schema, table). `s."Secret" AS x` -> ("s", "Secret"): the
    alias goes, a catalog prefix goes, a bare name is in `main`."""
    parts = split_identifier(_strip_alias(name.strip()))
    if len(parts) == 1:
        parts = ["main", *parts]
    elif len(parts) > 2:
        parts = parts[-2:]
    return parts[0], parts[1]


def _strip_alias(name: str) -> str:
    """The qualified name before the first unquoted whitespace."""
    quoted = False
    for i, ch in enumerate(name):
        if ch == '"':
            quoted = not quoted
        elif ch.isspace() and not quoted:
            return name[:i]
    return name
