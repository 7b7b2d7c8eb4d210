"""The same CSV text gives each record the same fate whether it is dropped as a landing file or
posted to the API as `text/csv`: same rows loaded, same lines rejected with the same reasons."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from gdx_pipeline.core.ingestion import ingest_landing
from gdx_pipeline.core.warehouse import rejected_rows
from gdx_pipeline_tests.api.app_client import app_engine

TEXTS = [
    '10,Fine\n11,"Unterminated',
    '1,O"Brien\n11,"Unterminated\n',  # an even number of quotes: counting them saw nothing wrong
    '1,O"Brien\n2,"Multi\nLine"\n3,"a ""quoted"" word"\n4,5\'11" tall\n',
    '1,"Sales\n2,Support\n',  # the API refused this whole body once; now its one record is rejected
    '1,"a"b,c\n2,"ok"\r\n3,\r\n\r\n4,last',
]


def rejects(engine: sa.Engine, source: str) -> list[tuple]:
    with engine.connect() as conn:
        query = sa.select(rejected_rows.c.line_number, rejected_rows.c.raw_line, rejected_rows.c.reasons).where(
            rejected_rows.c.source == source
        )
        return [(line, raw, list(reasons)) for line, raw, reasons in conn.execute(query.order_by(rejected_rows.c.line_number))]


@pytest.mark.parametrize("text", TEXTS)
def test_a_text_posted_to_the_api_and_dropped_as_a_file_gets_the_same_fates(client, text):  # noqa: F811
    response = client.post("/tables/jobs/rows", content=text.encode(), headers={"Content-Type": "text/csv"})
    assert response.status_code == 200, response.text
    posted = response.json()

    folders = client.app.state.settings.data_folder.folders().ensure()
    (folders.landing / "jobs.csv").write_text(text, encoding="utf-8", newline="")
    (outcome,) = ingest_landing(app_engine(client), folders)

    assert outcome.rows_read == posted["rows_received"]
    # The file loads nothing new: every row it loads, the API loaded already, with the same values.
    assert (outcome.counts.inserted, outcome.counts.updated, outcome.counts.unchanged) == (0, 0, posted["inserted"])
    assert rejects(app_engine(client), "jobs.csv") == rejects(app_engine(client), "api")
    assert [r["index"] + 1 for r in posted["rejected"]] == [line for line, *_ in rejects(app_engine(client), "api")]
