"""A bulk load's foreign keys, checked once on SQLite through the keys' indexes, against SQLite's
own `PRAGMA foreign_key_check` as the oracle: random tables with and without orphans, with and
without the indexes, and keys other than the warehouse's."""

import random

import pytest
import sqlalchemy as sa

from gdx_pipeline.core.keys_and_indexes import SQLITE_INDEX_BUILD_CACHE_KIB, index_build_cache
from gdx_pipeline.core.sqlite_foreign_keys import orphan_references, raise_for_orphans
from gdx_pipeline.core.warehouse import create_schema, create_warehouse_engine


def pragma_orphans(conn: sa.Connection, table: str) -> set[tuple[str, int]]:
    """(parent table, value) of every reference SQLite itself finds missing."""
    fk_columns = {parent: column for _id, _seq, parent, column, *_ in conn.exec_driver_sql(f"PRAGMA foreign_key_list({table})")}
    found = set()
    for _table, rowid, parent, _key in conn.exec_driver_sql(f"PRAGMA foreign_key_check({table})"):
        value = conn.exec_driver_sql(f"SELECT {fk_columns[parent]} FROM {table} WHERE rowid = ?", (rowid,)).scalar_one()
        found.add((parent, value))
    return found


def described(conn: sa.Connection, table: str, orphans: list[str]) -> set[tuple[str, int]]:
    """("departments", 99) from "department_id 99 has no row in departments", or from "rowid 7 has
    no row in departments" where row 7's department_id is 99."""
    fk_columns = {parent: column for _id, _seq, parent, column, *_ in conn.exec_driver_sql(f"PRAGMA foreign_key_list({table})")}
    found = set()
    for text in orphans:
        named, parent = text.split(" has no row in ")
        kind, number = named.split()
        if kind == "rowid":
            number = conn.exec_driver_sql(f"SELECT {fk_columns[parent]} FROM {table} WHERE rowid = ?", (int(number),)).scalar_one()
        found.add((parent, int(number)))
    return found


@pytest.fixture
def sqlite_engine(sqlite_url):
    engine = create_warehouse_engine(sqlite_url)
    create_schema(engine)
    yield engine
    engine.dispose()


@pytest.mark.parametrize("seed", range(12))
def test_the_indexed_check_finds_exactly_the_orphans_sqlite_finds(sqlite_engine, seed):
    rng = random.Random(seed)
    departments = rng.sample(range(1, 60), rng.randint(1, 12))
    jobs = rng.sample(range(1, 400), rng.randint(1, 30))
    with sqlite_engine.connect() as conn:
        conn.connection.driver_connection.execute("PRAGMA foreign_keys = OFF")  # as a bulk load has it
        with conn.begin():
            conn.exec_driver_sql("INSERT INTO departments (id, department) VALUES (?, ?)", [(d, f"D{d}") for d in departments])
            conn.exec_driver_sql("INSERT INTO jobs (id, job) VALUES (?, ?)", [(j, f"J{j}") for j in jobs])
            orphan_share = rng.choice([0.0, 0.01, 0.05, 0.3])
            rows = []
            for i in range(rng.randint(1, 3_000)):
                department = rng.randint(-5, 80) if rng.random() < orphan_share else rng.choice(departments)
                job = rng.randint(-5, 500) if rng.random() < orphan_share else rng.choice(jobs)
                rows.append((i + 1, f"N{i}", "2021-01-01 00:00:00.000000", department, job))
            conn.exec_driver_sql("INSERT INTO hired_employees VALUES (?, ?, ?, ?, ?)", rows)
            if rng.random() < 0.3:  # without the indexes: SQLite's pragma answers instead
                conn.exec_driver_sql("DROP INDEX ix_hired_employees_department_id")
            expected = pragma_orphans(conn, "hired_employees")
            assert described(conn, "hired_employees", orphan_references(conn, "hired_employees", limit=10_000)) == expected
            if expected:
                with pytest.raises(sa.exc.IntegrityError, match="FOREIGN KEY constraint failed"):
                    raise_for_orphans(conn, "hired_employees")
            else:
                raise_for_orphans(conn, "hired_employees")


def test_keys_without_an_index_or_with_several_columns_fall_back_to_the_pragma(sqlite_engine):
    with sqlite_engine.connect() as conn:
        conn.connection.driver_connection.execute("PRAGMA foreign_keys = OFF")  # as a bulk load has it
        with conn.begin():
            conn.exec_driver_sql("CREATE TABLE parent (a INTEGER, b INTEGER, PRIMARY KEY (a, b))")
            conn.exec_driver_sql(
                "CREATE TABLE child (id INTEGER PRIMARY KEY, a INTEGER, b INTEGER, FOREIGN KEY (a, b) REFERENCES parent (a, b))"
            )
            conn.exec_driver_sql("CREATE INDEX ix_child_a ON child (a)")
            conn.exec_driver_sql("INSERT INTO parent VALUES (1, 1)")
            conn.exec_driver_sql("INSERT INTO child VALUES (1, 1, 1), (2, 1, 2)")
            assert orphan_references(conn, "child") == ["rowid 2 has no row in parent"]
            conn.exec_driver_sql("DELETE FROM child WHERE id = 2")
            assert orphan_references(conn, "child") == []


def test_indexes_are_built_with_the_default_cache_and_the_connection_gets_its_own_back(sqlite_engine):
    with sqlite_engine.connect() as conn:
        before = conn.exec_driver_sql("PRAGMA cache_size").scalar_one()
        assert before != -SQLITE_INDEX_BUILD_CACHE_KIB  # else this test proves nothing
        with pytest.raises(RuntimeError), index_build_cache(conn):
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar_one() == -SQLITE_INDEX_BUILD_CACHE_KIB
            raise RuntimeError("an index build failed")
        assert conn.exec_driver_sql("PRAGMA cache_size").scalar_one() == before
