"""Names: an allow-list entry matches schema and table part by part (`crm.*` is the
tables directly in schema `crm`, not schema `crm.x`), and a schema or table name with
a control character or more than 255 bytes is refused with [invalid_argument] before
anything is created, whether it comes by DoPut or by SQL.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.flight as fl
import pytest

from tests.security.conftest import Lab, Outcome, quote

ROWS = pa.table({"id": pa.array([1, 2], pa.int32()), "v": ["a", "b"]})


def _put(lab: Lab, who: str, descriptor: fl.FlightDescriptor) -> Outcome:
    client = lab.server.flight()
    try:
        writer, reader = client.do_put(
            descriptor, ROWS.schema, lab.server.options(lab.tokens[who], timeout=60)
        )
        writer.write_table(ROWS)
        writer.done_writing()
        meta = reader.read()
        writer.close()
    except Exception as e:
        return Outcome(error=str(e), error_type=type(e).__name__)
    finally:
        client.close()
    body = meta.to_pybytes().decode("utf-8", "replace") if meta is not None else ""
    return Outcome(table=pa.table({"put_result": [body]}))


def _path(*parts: str) -> fl.FlightDescriptor:
    return fl.FlightDescriptor.for_path(*parts)


def _command(table: str) -> fl.FlightDescriptor:
    return fl.FlightDescriptor.for_command(json.dumps({"table": table}).encode())


def test_crm_star_covers_tables_directly_in_crm(lab: Lab) -> None:
    outcome = _put(lab, "limited_writer", _path("crm", "t"))
    assert outcome.ok, outcome.describe()
    got = lab.run("limited_writer", "SELECT count(*) AS n FROM crm.t")
    assert got.table is not None and got.table.column("n")[0].as_py() == 2, got.describe()
    lab.admin("DROP TABLE crm.t")
    lab.assert_unchanged("creating and dropping crm.t")


@pytest.mark.parametrize(
    ("descriptor", "codes"),
    [
        pytest.param(_path("crm.x", "t"), {"permission_denied"}, id="path-crm.x-t"),
        pytest.param(_path("crm.secret", "t"), {"permission_denied"}, id="path-crm.secret-t"),
        pytest.param(_path("CRM.Secret", "t"), {"permission_denied"}, id="path-CRM.Secret-t"),
        pytest.param(_command('"crm.x".t'), {"permission_denied"}, id="cmd-quoted-crm.x"),
        pytest.param(
            _command("crm.x.t"), {"permission_denied", "invalid_argument"}, id="cmd-three-parts"
        ),
    ],
)
def test_crm_star_does_not_cover_lookalike_schemas(
    lab: Lab, descriptor: fl.FlightDescriptor, codes: set[str]
) -> None:
    outcome = _put(lab, "limited_writer", descriptor)
    lab.assert_unchanged(f"DoPut to {descriptor}")
    assert outcome.code in codes, outcome.describe()


@pytest.mark.parametrize(
    "sql",
    [
        'CREATE SCHEMA "crm.secret"',
        'CREATE TABLE "crm.x".t (id INTEGER)',
        'CREATE SCHEMA IF NOT EXISTS "crm.x"',
    ],
)
def test_crm_star_writer_cannot_create_lookalike_schemas_by_sql(lab: Lab, sql: str) -> None:
    outcome = lab.execute("limited_writer", sql)
    lab.assert_unchanged(sql)
    assert outcome.code == "permission_denied", outcome.describe()


#: (id, schema, table): every one is refused, whatever the channel.
BAD_NAMES = [
    ("table-newline", "crm", "t\nx"),
    ("table-nul", "crm", "t\x00x"),
    ("table-tab", "crm", "t\tx"),
    ("table-escape", "crm", "t\x1b[31mx"),
    ("schema-newline", "bad\nschema", "t"),
    ("schema-nul", "bad\x00schema", "t"),
    ("table-256-bytes", "crm", "t" * 256),
    ("table-256-bytes-in-128-chars", "crm", "é" * 128),
    ("schema-256-bytes", "s" * 256, "t"),
]


@pytest.mark.parametrize(
    ("schema", "table"), [b[1:] for b in BAD_NAMES], ids=[b[0] for b in BAD_NAMES]
)
def test_bad_names_are_refused_by_doput(lab: Lab, schema: str, table: str) -> None:
    outcome = _put(lab, "writer", _path(schema, table))
    lab.assert_unchanged(f"DoPut to [{schema!r}, {table!r}]")
    assert outcome.code == "invalid_argument", outcome.describe()


@pytest.mark.parametrize(
    ("schema", "table"), [b[1:] for b in BAD_NAMES], ids=[b[0] for b in BAD_NAMES]
)
def test_bad_names_are_refused_by_doput_command(lab: Lab, schema: str, table: str) -> None:
    outcome = _put(lab, "writer", _command(f"{quote(schema)}.{quote(table)}"))
    lab.assert_unchanged(f"DoPut to {schema!r}.{table!r}")
    assert outcome.code == "invalid_argument", outcome.describe()


@pytest.mark.parametrize(
    "sql",
    [
        pytest.param('CREATE TABLE crm."t\nx" (id INTEGER)', id="table-newline"),
        pytest.param('CREATE TABLE crm."t\x00x" (id INTEGER)', id="table-nul"),
        pytest.param('CREATE TABLE crm."t\tx" AS SELECT 1 AS id', id="ctas-tab"),
        pytest.param('CREATE VIEW crm."v\nx" AS SELECT 1 AS id', id="view-newline"),
        pytest.param('CREATE SCHEMA "bad\nschema"', id="schema-newline"),
        pytest.param(f'CREATE TABLE crm."{"t" * 256}" (id INTEGER)', id="table-256-bytes"),
        pytest.param(
            f'CREATE TABLE crm."{"é" * 128}" AS SELECT 1 AS id', id="table-256-bytes-in-128-chars"
        ),
        pytest.param(f'CREATE SCHEMA "{"s" * 256}"', id="schema-256-bytes"),
    ],
)
def test_bad_names_are_refused_by_sql(lab: Lab, sql: str) -> None:
    outcome = lab.execute("writer", sql)
    lab.assert_unchanged(repr(sql))
    assert outcome.code == "invalid_argument", outcome.describe()


def test_names_of_255_bytes_are_fine(lab: Lab) -> None:
    """The other side of the limit: the refusals above are about length, not DuckDB."""
    for table in ("t" * 255, "é" * 127 + "t"):
        outcome = _put(lab, "writer", _path("crm", table))
        assert outcome.ok, outcome.describe()
        lab.admin(f"DROP TABLE crm.{quote(table)}")
    outcome = lab.execute("writer", f"CREATE TABLE crm.{quote('u' * 255)} (id INTEGER)")
    assert outcome.ok, outcome.describe()
    lab.admin(f"DROP TABLE crm.{quote('u' * 255)}")
    lab.assert_unchanged("creating and dropping 255-byte names")
