"""The published row schema as an oracle: which rows it refuses, and which rejections are of
rules no JSON Schema can state (so a row the schema admits may still be rejected for them)."""

import jsonschema

# Rejections of a row the published schema admits: rules that need the database, other rows or
# a calendar, which no JSON Schema can state.
RULES_NO_SCHEMA_STATES = ("no such id in", "duplicate of an earlier row", "datetime: must be", "datetime: not an ISO-8601 datetime")


def as_judged(row: object) -> object:
    """A row as its values are judged: strings trimmed of surrounding whitespace (the schema says so)."""
    return {key: value.strip() if isinstance(value, str) else value for key, value in row.items()} if isinstance(row, dict) else row


def rows_breaking(row_schema: dict, rows: list) -> set[int]:
    """Positions of the rows a published row schema refuses."""
    validator = jsonschema.Draft202012Validator(row_schema)
    return {i for i, row in enumerate(rows) if not validator.is_valid(as_judged(row))}


def only_rules_no_schema_states(reasons: list[str]) -> bool:
    return all(any(rule in reason for rule in RULES_NO_SCHEMA_STATES) for reason in reasons)
