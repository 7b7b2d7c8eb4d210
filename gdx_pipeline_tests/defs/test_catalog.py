"""The asset catalog of the code location: every asset owned, tagged, described and (where the
logic is ours) versioned; every metric column described; the right checks blocking; backups and
metrics with a freshness window and a retry policy that retries transient database errors only."""

from datetime import timedelta

import dagster as dg
import pytest
import sqlalchemy as sa

from gdx_pipeline.core.metrics import METRIC_TABLES
from gdx_pipeline.core.warehouse import is_transient_database_error
from gdx_pipeline.definitions import defs
from gdx_pipeline.defs.backups.assets import backup_assets
from gdx_pipeline.defs.backups.jobs import backup_job
from gdx_pipeline.defs.backups.resources import BackupSettingsResource
from gdx_pipeline.defs.catalog import INGEST_LOGIC, METRICS_LOGIC, freshness_for_cron, longest_cron_gap, source_version
from gdx_pipeline.defs.ingest.checks import blocking_check_keys
from gdx_pipeline.defs.metrics.assets import hiring_year_partitions
from gdx_pipeline.defs.retries import TRANSIENT_DATABASE_RETRY, retried_only_when_transient
from gdx_pipeline_tests.defs.runs import pipeline_definitions as metrics_pipeline, run as run_job

COLUMN_KINDS = {"integer", "text", "timestamp", "float"}
# Assets whose content our code does not decide: the landing folder's inventory.
NOT_OURS = {"landing_files"}
BACKUP_KEYS = [k for k in defs.resolve_asset_graph().get_all_asset_keys() if k.path[0] == "backups"]
METRIC_KEYS = [dg.AssetKey(n) for n in ("quarterly_hires", "departments_above_mean_hires", "hiring_dashboard")]


@pytest.fixture(scope="module")
def graph():
    return defs.resolve_asset_graph()


def test_every_asset_has_owners_tags_a_description_and_our_code_version(graph):
    keys = graph.get_all_asset_keys()
    assert len(keys) == 14
    for key in keys:
        node = graph.get(key)
        name = key.to_user_string()
        assert node.owners and all(o.startswith("team:") for o in node.owners), name
        assert {"domain", "layer", "pii"} <= set(node.tags), name
        assert node.tags["pii"] in {"yes", "no"}, name
        assert node.description and len(node.description) > 40, name
        assert (node.code_version is None) == (name in NOT_OURS), name
    personal = {k.to_user_string() for k in keys if graph.get(k).tags["pii"] == "yes"}
    assert {"hired_employees", "rejected_rows", "backups/hired_employees", "backups/rejected_rows"} <= personal
    assert not personal & {"departments", "jobs", "quarterly_hires", "departments_above_mean_hires", "hiring_dashboard"}


def test_every_column_of_every_table_is_typed_and_described(graph):
    for name in ("departments", "jobs", "hired_employees", *(t.name for t in METRIC_TABLES)):
        key = dg.AssetKey(name) if name in ("departments", "jobs", "hired_employees") else None
        if key is None:
            (key,) = [k for k in graph.get_all_asset_keys() if graph.get(k).metadata.get("dagster/table_name") == name]
        schema = graph.get(key).metadata["dagster/column_schema"]
        for column in schema.columns:
            assert column.type in COLUMN_KINDS, (name, column.name, column.type)
            assert column.description and column.description.strip(), (name, column.name)
    for table in METRIC_TABLES:  # the schema shown is the table's, column for column
        (key,) = [k for k in graph.get_all_asset_keys() if graph.get(k).metadata.get("dagster/table_name") == table.name]
        assert [c.name for c in graph.get(key).metadata["dagster/column_schema"].columns] == [c.name for c in table.columns]


def test_the_checks_that_guard_the_metrics_are_blocking(graph):
    blocking = {key for key in graph.asset_check_keys if graph.get_check_spec(key).blocking}
    expected = {dg.AssetCheckKey(dg.AssetKey(t), "matches_dictionary") for t in ("departments", "jobs", "hired_employees")}
    expected.add(dg.AssetCheckKey(dg.AssetKey("hired_employees"), "no_orphans"))
    assert blocking == expected == set(blocking_check_keys)


def test_backups_and_metrics_expect_freshness_and_retry_transient_errors(graph):
    nightly = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=26), warn_window=timedelta(hours=25))
    for key in [*BACKUP_KEYS, *METRIC_KEYS]:
        assert graph.get(key).freshness_policy == nightly, key
    for key in [*BACKUP_KEYS, *METRIC_KEYS, dg.AssetKey("hiring_years")]:
        assert graph.get(key).assets_def.op.retry_policy == TRANSIENT_DATABASE_RETRY, key


def test_freshness_windows_follow_the_cron():
    assert longest_cron_gap("0 2 * * *") == timedelta(days=1)
    assert longest_cron_gap("0 2 * * 1-5") == timedelta(days=3)  # the weekend
    assert longest_cron_gap("0 2 1 * *") == timedelta(days=31)
    weekly = freshness_for_cron("0 2 * * 1")
    assert weekly == dg.FreshnessPolicy.time_window(fail_window=timedelta(days=7, hours=2), warn_window=timedelta(days=7, hours=1))


def test_a_code_version_changes_with_the_logic_it_covers(tmp_path):
    (tmp_path / "core").mkdir()
    logic = tmp_path / "core" / "metrics.py"
    logic.write_bytes(b"QUARTERS = 4\n")
    before = source_version("core/metrics.py", root=tmp_path)
    logic.write_bytes(b"QUARTERS = 4\r\n")
    assert source_version("core/metrics.py", root=tmp_path) == before  # a Windows checkout of the same code
    logic.write_bytes(b"QUARTERS = 3\n")
    assert source_version("core/metrics.py", root=tmp_path) != before
    # The shipped assets carry the version of their own logic.
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey("quarterly_hires")).code_version == source_version(*METRICS_LOGIC)
    assert graph.get(dg.AssetKey("hired_employees")).code_version == source_version(*INGEST_LOGIC)
    assert source_version(*METRICS_LOGIC) != source_version(*INGEST_LOGIC)


# --- What is retried ----------------------------------------------------------------------


def test_transient_database_errors_are_told_from_refusals(sqlite_url, postgres_url):
    holder = sa.create_engine(sqlite_url)
    impatient = sa.create_engine(sqlite_url, connect_args={"timeout": 0})
    with holder.connect() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        conn.commit()
    refusals, transient = [], []
    with holder.connect() as locked:
        locked.exec_driver_sql("BEGIN IMMEDIATE")
        with pytest.raises(sa.exc.OperationalError) as busy, impatient.begin() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        transient.append(busy.value)  # another writer holds the lock
        locked.rollback()
    with pytest.raises(sa.exc.OperationalError) as missing, impatient.connect() as conn:
        conn.exec_driver_sql("SELECT * FROM no_such_table")
    refusals.append(missing.value)  # SQLite says OperationalError for a missing table too
    with impatient.begin() as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    with pytest.raises(sa.exc.IntegrityError) as duplicate, impatient.begin() as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    refusals.append(duplicate.value)

    with pytest.raises(sa.exc.OperationalError) as refused, sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none").connect():
        pass
    transient.append(refused.value)  # the server is down or restarting
    with pytest.raises(sa.exc.ProgrammingError) as undefined, sa.create_engine(postgres_url).connect() as conn:
        conn.exec_driver_sql("SELECT * FROM no_such_table")
    refusals.append(undefined.value)
    refusals.append(ValueError("year must be a whole number"))

    assert [is_transient_database_error(e) for e in transient] == [True] * len(transient)
    assert [is_transient_database_error(e) for e in refusals] == [False] * len(refusals)


def step_retries(result) -> int:
    return sum(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)


def test_a_transient_error_is_retried_and_a_refusal_is_not(sqlite_url):
    """The policy's mechanism on a real SQLite lock: the first attempt finds the table locked and
    is retried; the retry finds it free. A refusal fails at its first attempt."""
    holder = sa.create_engine(sqlite_url)
    with holder.connect() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        conn.commit()
    locked = holder.connect()
    locked.exec_driver_sql("BEGIN IMMEDIATE")
    impatient = sa.create_engine(sqlite_url, connect_args={"timeout": 0})

    @dg.asset(retry_policy=dg.RetryPolicy(max_retries=2))  # TRANSIENT_DATABASE_RETRY, without its wait
    def writes(context: dg.AssetExecutionContext) -> None:
        if context.retry_number == 1:
            locked.rollback()  # the other writer finishes
        with retried_only_when_transient(), impatient.begin() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")

    @dg.asset(retry_policy=dg.RetryPolicy(max_retries=2))
    def refused() -> None:
        with retried_only_when_transient(), impatient.begin() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")  # a duplicate by now

    with dg.instance_for_test() as instance:
        written = dg.materialize([writes], instance=instance)
        assert written.success and step_retries(written) == 1
        failed = dg.materialize([refused], instance=instance, raise_on_error=False)
    locked.close()
    assert not failed.success and step_retries(failed) == 0
    (failure,) = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.event_specific_data.error.message.startswith("dagster._core.definitions.events.Failure: IntegrityError")


def test_the_real_assets_do_not_retry_refusals(sqlite_url, folders):
    """A bad codec setting and a partition that is no year fail at once, with their reason."""
    metrics = metrics_pipeline(sqlite_url, folders)
    backups = dg.Definitions(
        assets=backup_assets,
        jobs=[backup_job],
        resources={**metrics.resources, "backup_settings": BackupSettingsResource(codec="lzma-please")},
    )
    with dg.instance_for_test() as instance:
        backup = run_job(backups, "backup_job", instance)
        instance.add_dynamic_partitions(hiring_year_partitions.name, ["not-a-year"])
        year = metrics.resolve_job_def("metrics_job").execute_in_process(
            instance=instance, partition_key="not-a-year", raise_on_error=False
        )
    for result in (backup, year):
        assert not result.success and step_retries(result) == 0
    assert (
        "lzma-please"
        in backup.all_events[[e.event_type_value for e in backup.all_events].index("STEP_FAILURE")].event_specific_data.error.message
    )
