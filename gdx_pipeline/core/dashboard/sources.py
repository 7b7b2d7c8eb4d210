"""What the numbers leave out and where they come from: rejected rows and quarantined files, and
the files, API batches and restores in the ingestion ledger, so the demo sample is never mistaken
for the real data."""

from __future__ import annotations

from gdx_pipeline.core.dashboard.data import DashboardData
from gdx_pipeline.core.dashboard.text import escaped, utc_time
from gdx_pipeline.core.provenance import Provenance


def left_out_section(data: DashboardData) -> str:
    rejected = "\n".join(
        f'<li>Rows rejected while loading <code>{escaped(name)}</code>, all loads: '
        f'<strong data-rejected-table="{escaped(name)}">{count:,}</strong></li>'
        for name, count in data.rejected_by_table.items()
    )
    held = ", ".join(f"{escaped(name)} {count:,}" for name, count in data.rows_by_table.items())
    quarantined = (
        f"{data.quarantined_files:,} file(s) could not be read at all and were quarantined."
        if data.quarantined_files
        else "No file was quarantined."
    )
    return (
        f'<p>Counted over every load so far, for all years together (<strong id="rejected-total">{data.rejected:,}</strong> '
        "in all): a rejected row is not placed in a year, because many have no valid hire date. Each broke the data "
        "dictionary (a blank or invalid field, an unknown department or job) and is in no number on this page; it is kept "
        "with its reasons in the <code>rejected_rows</code> table and in <code>rejects/</code>.</p>"
        f'<ul id="rejected-by-table">\n{rejected}\n</ul>'
        f"<p>{quarantined} The warehouse holds: {held}.</p>"
    )


def provenance_section(provenance: Provenance) -> str:
    if provenance.is_empty:
        return '<p class="no-data">Nothing has been loaded yet.</p>'
    rows = [
        (
            f.table,
            "file",
            f.file,
            f.sha256_prefix,
            f"{f.rows_read:,}",
            f"{f.rows_inserted + f.rows_updated:,}",
            f"{f.rows_rejected:,}",
            utc_time(f.loaded_at),
        )
        for f in provenance.files
    ]
    rows += [
        (
            b.table,
            b.source,
            f"{b.batches:,} batch(es), {utc_time(b.first_at)} to {utc_time(b.last_at)}",
            "",
            f"{b.rows_read:,}",
            f"{b.rows_inserted + b.rows_updated:,}",
            f"{b.rows_rejected:,}",
            utc_time(b.last_at),
        )
        for b in provenance.batches
    ]
    rows += [(r.table, "restore", r.backup, "", "", f"{r.rows:,}", "", utc_time(r.restored_at)) for r in provenance.restores]
    body = "\n".join("<tr>" + "".join(f"<td>{escaped(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    head = "".join(
        f'<th scope="col">{label}</th>'
        for label in (
            "table",
            "kind",
            "file or source",
            "sha256 (first 12)",
            "rows read",
            "rows loaded",
            "rows rejected",
            "committed at (UTC)",
        )
    )
    older = (
        f"<p>And {provenance.older_files:,} older file(s), {provenance.older_file_rows:,} rows read, not listed.</p>"
        if provenance.older_files
        else ""
    )
    summary = (
        f"<p>{provenance.file_count:,} file(s), {provenance.batch_count:,} API batch(es) and {len(provenance.restores):,} restore(s) "
        "fed the warehouse, from the ingestion ledger, newest first. A file is named with the first digits of its sha256, "
        "so the shipped demo sample and the real files tell apart even under the same name.</p>"
    )
    table = f'<table id="sources-table"><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>'
    return f'{summary}<div class="scroll">{table}</div>{older}'
