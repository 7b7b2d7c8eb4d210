from gdx_pipeline.core.ingestion import ingest_landing
from gdx_pipeline_tests.conftest import table_count


def test_real_data_loads(engine, globant_landing):
    outcomes = ingest_landing(engine, globant_landing, run_id="r1")
    assert [o.status for o in outcomes] == ["applied"] * 3
    assert table_count(engine, "hired_employees") == 1929
    assert table_count(engine, "rejected_rows") == 70
