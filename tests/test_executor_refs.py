"""What an executor keeps about a job's attempt (``jobs.executor_ref``): typed in Python, JSON text in the
database with the keys rows always had, so rows written before the types read back as they were meant."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from sqlalchemy import Column, Engine, Integer, MetaData, Table, create_engine, insert, select, text

from labcloud.services.executor_refs import (
    AttemptRef,
    CeleryRef,
    ExecutorRefText,
    SlurmRef,
    engine_id,
    log_base,
    parse,
    with_log_base,
)

OLD_ROWS = {  # as servers wrote them before refs had a kind
    '{"log_base": 120}': AttemptRef(log_base=120),
    '{"log_base": 0, "slurm_id": "4711"}': SlurmRef(log_base=0, engine_id="4711"),
    '{"slurm_id": 4712}': SlurmRef(engine_id="4712"),
    '{"log_base": 9, "task_id": "0190-ab.2"}': CeleryRef(log_base=9, engine_id="0190-ab.2"),
    "{}": AttemptRef(),
}
UNREADABLE = ["not json", "[1, 2]", '{"kind": "kubernetes", "log_base": 1}', '{"log_base": -5}', ""]


@pytest.fixture
def refs_table(database_url: str) -> Iterator[tuple[Engine, Table]]:
    """A scratch table with one executor_ref column, on the test database (SQLite or PostgreSQL)."""
    engine = create_engine(database_url)
    table = Table(
        f"refs_{secrets.token_hex(4)}",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("ref", ExecutorRefText, nullable=True),
    )
    table.create(engine)
    try:
        yield engine, table
    finally:
        table.drop(engine)
        engine.dispose()


def test_rows_written_before_refs_had_a_kind_read_back_typed(refs_table: tuple[Engine, Table]) -> None:
    engine, table = refs_table
    raw = [*OLD_ROWS, *UNREADABLE, None]
    with engine.begin() as conn:
        for i, value in enumerate(raw):
            conn.execute(text(f"INSERT INTO {table.name} (id, ref) VALUES (:i, :v)"), {"i": i, "v": value})
        read = dict(conn.execute(select(table.c.id, table.c.ref)).all())
    assert [read[i] for i in range(len(OLD_ROWS))] == list(OLD_ROWS.values())
    assert all(read[i] is None for i in range(len(OLD_ROWS), len(raw)))  # unreadable, or no ref: none


def test_refs_are_stored_with_the_keys_rows_always_had(refs_table: tuple[Engine, Table]) -> None:
    engine, table = refs_table
    refs = [SlurmRef(log_base=3, engine_id="12"), CeleryRef(engine_id="j.1"), AttemptRef(log_base=7), None]
    with engine.begin() as conn:
        conn.execute(insert(table), [{"id": i, "ref": ref} for i, ref in enumerate(refs)])
        stored = dict(conn.execute(text(f"SELECT id, ref FROM {table.name}")).all())
        typed = dict(conn.execute(select(table.c.id, table.c.ref)).all())
    assert parse(stored[0]) == refs[0] and '"slurm_id":"12"' in stored[0] and '"log_base":3' in stored[0]
    assert '"task_id":"j.1"' in stored[1] and stored[3] is None
    assert [typed[i] for i in range(len(refs))] == refs


def test_what_engines_and_workers_read_from_a_ref() -> None:
    slurm = SlurmRef(log_base=100, engine_id="12")
    assert (engine_id(slurm), log_base(slurm)) == ("12", 100)
    assert (engine_id(AttemptRef(log_base=5)), log_base(AttemptRef(log_base=5))) == (None, 5)
    assert (engine_id(None), log_base(None)) == (None, 0)
    # a runner that takes the job again starts its log further on; the engine's id stays
    assert with_log_base(slurm, 250) == SlurmRef(log_base=250, engine_id="12")
    assert with_log_base(None, 40) == AttemptRef(log_base=40)
