"""PostgreSQL connections from the pool: one that sat idle is pinged and replaced when its server
process is gone; one used a moment ago goes straight back to work without a ping."""

import pytest
import sqlalchemy as sa

from gdx_pipeline.core.warehouse import create_warehouse_engine

pytestmark = pytest.mark.postgres


def backend_pid(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()


def terminate(postgres_url: str, pid: int) -> None:
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        assert conn.exec_driver_sql(f"SELECT pg_terminate_backend({pid}, 5000)").scalar_one()
    admin.dispose()


def counting_pings(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    pings: list[int] = []
    real_ping = engine.dialect.do_ping

    def ping(dbapi_connection) -> bool:  # noqa: ANN001
        pings.append(1)
        return real_ping(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", ping)
    return pings


def test_an_idle_connection_whose_server_process_died_is_replaced_before_use(postgres_url, monkeypatch):
    engine = create_warehouse_engine(postgres_url, ping_after_idle_seconds=0)  # every connection counts as idle
    pings = counting_pings(engine, monkeypatch)
    first = backend_pid(engine)
    terminate(postgres_url, first)

    second = backend_pid(engine)  # the dead connection failed its ping and was replaced
    assert second != first
    assert len(pings) == 1
    engine.dispose()


def test_a_connection_used_a_moment_ago_is_not_pinged(postgres_url, monkeypatch):
    engine = create_warehouse_engine(postgres_url, ping_after_idle_seconds=3600)
    pings = counting_pings(engine, monkeypatch)
    pids = {backend_pid(engine) for _ in range(5)}
    assert len(pids) == 1 and pings == []

    # Which is why only idle ones may skip it: a recently used connection whose server process
    # died fails its next statement, and the pool starts afresh after it.
    terminate(postgres_url, pids.pop())
    with pytest.raises(sa.exc.OperationalError) as failure:
        backend_pid(engine)
    assert failure.value.connection_invalidated
    assert backend_pid(engine) > 0
    engine.dispose()
