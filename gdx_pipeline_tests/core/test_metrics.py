"""The two hiring metrics computed in the database, on SQLite and PostgreSQL: the published
reference on the real data, an independent pandas oracle, empty years, the UTC quarter edges,
ties, bad years, and the warehouse tables they are stored in."""

from datetime import UTC, datetime

import pandas as pd
import pytest
import sqlalchemy as sa

from gdx_pipeline.core import metrics
from gdx_pipeline.core.ingestion import ingest_landing
from gdx_pipeline.core.warehouse import create_schema, create_warehouse_engine
from gdx_pipeline_tests.paths import GLOBANT_DATA
from gdx_pipeline_tests.published_metrics import REFERENCE_ABOVE_MEAN, REFERENCE_QUARTER_TOTALS


def csv_oracle(year: int) -> tuple[pd.DataFrame, pd.Series]:
    """The metrics recomputed in pandas straight from the real CSV files: (quarterly frame, hires per department id)."""
    departments = pd.read_csv(GLOBANT_DATA / "departments.csv", header=None, names=["department_id", "department"])
    jobs = pd.read_csv(GLOBANT_DATA / "jobs.csv", header=None, names=["job_id", "job"])
    hired = pd.read_csv(
        GLOBANT_DATA / "hired_employees.csv",
        header=None,
        names=["id", "name", "datetime", "department_id", "job_id"],
        dtype=str,
        keep_default_na=False,
    )
    complete = hired[(hired != "").all(axis=1)].copy()
    assert len(complete) == 1929  # the published load: 1,929 rows, 70 with blank fields
    when = pd.to_datetime(complete["datetime"], utc=True, format="ISO8601")
    complete = complete[when.dt.year == year].assign(quarter=lambda f: "Q" + ((when[f.index].dt.month - 1) // 3 + 1).astype(str))
    complete = complete.astype({"department_id": int, "job_id": int}).merge(departments).merge(jobs)
    pivot = complete.pivot_table(index=["department", "job"], columns="quarter", values="id", aggfunc="count", fill_value=0)
    pivot = pivot.reindex(columns=list(metrics.QUARTERS), fill_value=0).reset_index()
    pivot.columns.name = None
    pivot = pivot.sort_values(["department", "job"], key=lambda s: s.map(lambda v: v.encode())).reset_index(drop=True)
    return pivot, complete.groupby("department_id").size()


@pytest.fixture
def real_data(engine, globant_landing):
    ingest_landing(engine, globant_landing, run_id="metrics")
    return engine


def load_rows(engine, folders, departments: str, jobs: str, hires: str) -> None:
    """A small hand-made dataset through the real ingestion path (landing files)."""
    for name, text in (("departments.csv", departments), ("jobs.csv", jobs), ("hired_employees.csv", hires)):
        (folders.landing / name).write_text(text)
    outcomes = ingest_landing(engine, folders, run_id="metrics-small")
    assert [o.rows_rejected for o in outcomes] == [0, 0, 0]


def test_quarterly_hires_matches_the_published_reference(real_data):
    frame = metrics.quarterly_hires(real_data, 2021)
    assert list(frame.columns) == ["department", "job", "Q1", "Q2", "Q3", "Q4"]
    assert len(frame) == 933
    assert [int(frame[q].sum()) for q in metrics.QUARTERS] == REFERENCE_QUARTER_TOTALS
    names = list(zip(frame["department"], frame["job"]))
    assert names == sorted(names)  # alphabetical by department, then job
    assert (frame[list(metrics.QUARTERS)].sum(axis=1) > 0).all()


def test_departments_above_mean_matches_the_published_reference(real_data):
    frame, mean = metrics.departments_above_mean(real_data, 2021)
    assert list(frame.columns) == ["id", "department", "hired"]
    assert list(frame.itertuples(index=False, name=None)) == REFERENCE_ABOVE_MEAN
    assert round(mean, 2) == 136.92
    assert mean == pytest.approx(1643 / 12)  # the year's hires over the 12 departments that hired


@pytest.mark.parametrize("year", [2021, 2022])
def test_both_metrics_agree_with_a_pandas_oracle_on_the_csv(real_data, year):
    expected, per_department = csv_oracle(year)
    pd.testing.assert_frame_equal(metrics.quarterly_hires(real_data, year), expected, check_dtype=False)
    frame, mean = metrics.departments_above_mean(real_data, year)
    assert mean == pytest.approx(per_department.mean())
    above = per_department[per_department > per_department.mean()]
    assert dict(zip(frame["id"], frame["hired"])) == above.to_dict()
    assert metrics.hires_in_year(real_data, year) == per_department.sum()


def test_years_with_hires_and_hires_per_department(real_data):
    assert metrics.years_with_hires(real_data) == {2021: csv_oracle(2021)[1].sum(), 2022: csv_oracle(2022)[1].sum()}
    per_department = metrics.hires_per_department(real_data, 2021)
    assert int(per_department["hired"].sum()) == sum(REFERENCE_QUARTER_TOTALS)
    assert list(per_department["department"]) == sorted(per_department["department"])


def test_a_year_without_hires_gives_empty_results_not_an_error(real_data):
    quarterly = metrics.quarterly_hires(real_data, 1999)
    assert quarterly.empty and list(quarterly.columns) == metrics.QUARTERLY_COLUMNS
    frame, mean = metrics.departments_above_mean(real_data, 1999)
    assert frame.empty and list(frame.columns) == ["id", "department", "hired"] and mean is None
    assert metrics.hires_in_year(real_data, 1999) == 0
    assert metrics.hires_per_department(real_data, 1999).empty


def test_an_empty_warehouse_gives_empty_results(engine):
    assert metrics.quarterly_hires(engine, 2021).empty
    assert metrics.departments_above_mean(engine, 2021)[1] is None
    assert metrics.years_with_hires(engine) == {}


def test_sqlite_counts_years_with_its_year_index_and_drops_the_old_time_index(tmp_path, folders):
    engine = create_warehouse_engine(f"sqlite:///{tmp_path / 'old.sqlite'}")
    create_schema(engine)
    with engine.begin() as conn:  # a warehouse made by an older version: an index on the time itself
        conn.exec_driver_sql("CREATE INDEX ix_hired_employees_datetime ON hired_employees (datetime)")
    create_schema(engine)  # what every start does
    with engine.connect() as conn:
        indexes = dict(
            conn.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'hired_employees'").all()
        )
    assert "ix_hired_employees_datetime" not in indexes
    assert "substr(datetime, 1, 4)" in indexes["ix_hired_employees_year"]

    load_rows(
        engine,
        folders,
        "1,Alpha\n",
        "1,Analyst\n",
        "1,A,1999-12-31T23:59:59.999999Z,1,1\n2,B,2000-01-01T00:00:00Z,1,1\n3,C,2000-06-01T12:00:00+14:00,1,1\n4,D,2999-12-31T23:59:59Z,1,1\n",
    )
    statements = []
    sa.event.listen(engine, "before_cursor_execute", lambda *args: args[2].startswith("SELECT") and statements.append(args[2:4]))
    assert metrics.years_with_hires(engine, full_scan=True) == {1999: 1, 2000: 2, 2999: 1}  # the rollup's oracle
    assert metrics.hires_in_year(engine, 2000) == 2
    with engine.connect() as conn:
        for statement, parameters in statements:  # both read the year index, not the table
            plan = " ".join(row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters))
            assert "USING INDEX ix_hired_employees_year" in plan, (statement, plan)
    assert len(statements) == 2
    engine.dispose()


def _session_time_zone(database_url: str, zone: str) -> sa.Engine:
    """An engine whose PostgreSQL sessions run in `zone`: the metrics must not depend on it."""
    engine = create_warehouse_engine(database_url)
    if engine.dialect.name == "postgresql":

        @sa.event.listens_for(engine, "connect")
        def _set_zone(dbapi_connection, _record):  # noqa: ANN001
            with dbapi_connection.cursor() as cursor:
                cursor.execute(f"SET TIME ZONE '{zone}'")
            dbapi_connection.commit()

    return engine


def test_quarters_are_utc_at_every_edge(engine, database_url, folders):
    load_rows(
        engine,
        folders,
        "1,Alpha\n2,Beta\n",
        "1,Analyst\n",
        "1,Late March west of UTC,2021-03-31T23:30:00-02:00,1,1\n"  # 2021-04-01 01:30 UTC: Q2
        "2,Last second of Q1,2021-03-31T23:59:59Z,1,1\n"  # Q1
        "3,First instant of Q2,2021-04-01T00:00:00Z,2,1\n"  # Q2
        "4,New Year's Eve west of UTC,2021-12-31T23:30:00-02:00,2,1\n"  # 2022-01-01 01:30 UTC: 2022 Q1
        "5,New Year's Day east of UTC,2021-01-01T01:00:00+02:00,1,1\n",  # 2020-12-31 23:00 UTC: 2020 Q4
    )
    # Sao Paulo is UTC-3: a session-time-zone month would move hires 1, 3 and 4 back a quarter.
    shifted = _session_time_zone(database_url, "America/Sao_Paulo")
    try:
        for current in (engine, shifted):
            rows = metrics.quarterly_hires(current, 2021).to_dict("records")
            assert rows == [
                {"department": "Alpha", "job": "Analyst", "Q1": 1, "Q2": 1, "Q3": 0, "Q4": 0},
                {"department": "Beta", "job": "Analyst", "Q1": 0, "Q2": 1, "Q3": 0, "Q4": 0},
            ]
            assert metrics.quarterly_hires(current, 2022).to_dict("records") == [
                {"department": "Beta", "job": "Analyst", "Q1": 1, "Q2": 0, "Q3": 0, "Q4": 0}
            ]
            assert metrics.quarterly_hires(current, 2020)[list(metrics.QUARTERS)].values.tolist() == [[0, 0, 0, 1]]
            assert metrics.years_with_hires(current) == {2020: 1, 2021: 3, 2022: 1}
            assert [metrics.hires_in_year(current, year) for year in (2019, 2020, 2021, 2022)] == [0, 1, 3, 1]
    finally:
        shifted.dispose()


def test_ties_and_duplicate_names_come_back_in_one_order_on_every_engine(engine, folders):
    # Departments 2 and 3 share a name; three departments tie at 3 hires; jobs 1 and 2 share a name.
    hires = []
    for department, count in ((1, 3), (2, 3), (3, 3), (4, 1)):
        for n in range(count):
            hires.append(f"{len(hires) + 1},Person {len(hires)},2021-0{n + 1}-15T12:00:00Z,{department},{1 + n % 2}")
    load_rows(engine, folders, "1,Zeta\n2,Alpha\n3,Alpha\n4,Low\n", "1,Clerk\n2,Clerk\n", "\n".join(hires) + "\n")
    frame, mean = metrics.departments_above_mean(engine, 2021)
    assert mean == 2.5
    assert list(frame.itertuples(index=False, name=None)) == [(2, "Alpha", 3), (3, "Alpha", 3), (1, "Zeta", 3)]
    quarterly = metrics.quarterly_hires_by_id(engine, 2021)
    assert list(zip(quarterly["department_id"], quarterly["job_id"])) == [(2, 1), (2, 2), (3, 1), (3, 2), (4, 1), (1, 1), (1, 2)]


def test_names_order_by_code_point_on_every_engine(engine, folders):
    # A locale collation would put "b" before "C" and ignore the hyphen; code-point order does neither.
    load_rows(
        engine,
        folders,
        "1,b dept\n2,C dept\n3,-dash\n4,Émile\n",
        "1,job\n",
        "".join(f"{d},P,2021-05-05T00:00:00Z,{d},1\n" for d in range(1, 5)),
    )
    assert list(metrics.quarterly_hires(engine, 2021)["department"]) == ["-dash", "C dept", "b dept", "Émile"]


@pytest.mark.parametrize(
    ("year", "message"),
    [
        ("twenty", "whole number"),
        (2021.5, "whole number"),
        (True, "whole number"),
        (None, "whole number"),
        (0, "outside"),
        (1899, "outside"),
        (3000, "outside"),
        (-2021, "outside"),
        ("-2021", "whole number"),
    ],
)
def test_a_bad_year_is_a_clear_error(sqlite_url, year, message):
    engine = create_warehouse_engine(sqlite_url)
    with pytest.raises(metrics.InvalidYearError, match=message):
        metrics.quarterly_hires(engine, year)
    with pytest.raises(metrics.InvalidYearError, match=message):
        metrics.departments_above_mean(engine, year)


def test_a_year_may_be_given_as_its_digits():
    assert metrics.hiring_year("2021") == 2021
    assert metrics.hiring_year(" 2021 ") == 2021


def test_stored_metrics_replace_the_year_and_keep_other_years(real_data):
    engine = real_data
    metrics.ensure_metric_tables(engine)
    at = datetime(2024, 1, 1, tzinfo=UTC)
    for year in (2021, 2022):
        metrics.store_quarterly_hires(engine, year, metrics.quarterly_hires_by_id(engine, year), at)
        frame, mean = metrics.departments_above_mean(engine, year)
        metrics.store_departments_above_mean(engine, year, frame, mean, at)
    metrics.store_quarterly_hires(engine, 2021, metrics.quarterly_hires_by_id(engine, 2021), at)  # again: replaces, no duplicates
    assert list(metrics.stored_quarter_totals(engine, 2021).values()) == REFERENCE_QUARTER_TOTALS
    assert sum(metrics.stored_quarter_totals(engine, 2022).values()) == metrics.hires_in_year(engine, 2022)
    stored = metrics.stored_departments_above_mean(engine, 2021)
    assert list(stored[["id", "department", "hired"]].itertuples(index=False, name=None)) == REFERENCE_ABOVE_MEAN
    assert set(stored["mean_hired"].round(2)) == {136.92}

    metrics.store_quarterly_hires(engine, 2021, metrics.quarterly_hires_by_id(engine, 1999), at)  # an emptied year
    assert sum(metrics.stored_quarter_totals(engine, 2021).values()) == 0
    assert sum(metrics.stored_quarter_totals(engine, 2022).values()) == metrics.hires_in_year(engine, 2022)


def test_an_older_warehouse_gains_the_metric_tables(engine):
    with engine.begin() as conn:
        for table in metrics.METRIC_TABLES:
            conn.exec_driver_sql(f"DROP TABLE {table.name}")
    metrics.ensure_metric_tables(engine)
    metrics.ensure_metric_tables(engine)  # idempotent
    assert {t.name for t in metrics.METRIC_TABLES} <= set(sa.inspect(engine).get_table_names())


def test_sqlite_aggregates_scan_the_table_instead_of_walking_an_index(sqlite_url):
    """At 10 M rows SQLite's own plans (walk the datetime or department index, fetch each row) took 4-20 s; a scan 1.5-3.5 s."""
    engine = create_warehouse_engine(sqlite_url)
    create_schema(engine)
    for query in (metrics.quarterly_hires_query(2021, False), metrics.departments_above_mean_query(2021, False)):
        sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
        with engine.connect() as conn:
            plan = [row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")]
        assert [step for step in plan if "hired_employees" in step] == ["SCAN hired_employees"], plan
