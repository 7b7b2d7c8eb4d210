"""What the ingestion tests write and read back: a file dropped into landing, and the reject log's
rows for one source, by line number."""

from pathlib import Path

import sqlalchemy as sa

from gdx_pipeline.core.warehouse import rejected_rows


def drop(folders, name: str, content: str | bytes) -> Path:
    path = folders.landing / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def rejects_by_line(engine, source: str) -> dict[int, tuple[str, list[str]]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(rejected_rows.c.line_number, rejected_rows.c.raw_line, rejected_rows.c.reasons).where(
                rejected_rows.c.source == source
            )
        ).all()
    return {line: (raw, reasons) for line, raw, reasons in rows}
