"""Backup settings: when the nightly backup runs, how many backups to keep, which Avro codec.

From environment variables, with defaults that work on a fresh clone: `GDX_BACKUP_CRON`
(default `0 2 * * *`, read as UTC), `GDX_BACKUP_RETENTION` (backups kept per table, default 14)
and `GDX_BACKUP_CODEC` (`deflate` by default; `null`, or `snappy`/`zstandard` where their
libraries are installed). The code location reads them once, in `code_location_backup_settings()`:
the schedule, the backup assets' freshness and the `backup_settings` resource share that reading.
"""

import warnings
from functools import cache

import dagster as dg
from pydantic import Field

from gdx_pipeline.core.backups import DEFAULT_CODEC, DEFAULT_RETENTION, check_codec
from gdx_pipeline.defs.resources import SettingsError

DEFAULT_BACKUP_CRON = "0 2 * * *"


class BackupSettingsResource(dg.ConfigurableResource):
    """How backups are taken and kept."""

    cron: str = Field(default=DEFAULT_BACKUP_CRON, description="When nightly_backup_schedule runs (cron, UTC).")
    retention: int = Field(default=DEFAULT_RETENTION, ge=1, description="Backups kept per table; older ones are deleted after each backup.")
    codec: str = Field(default=DEFAULT_CODEC, description="Avro codec: null, deflate, or snappy/zstandard where installed.")

    def checked_codec(self) -> str:
        """The codec, or a BackupError naming the ones that work here."""
        return check_codec(self.codec)


# A backup setting in the environment that is not usable: the one settings error, by its older name.
BackupSettingsError = SettingsError


def is_schedulable(cron: str) -> bool:
    """Whether Dagster takes `cron` for a schedule (five fields, no 30 February, ...), asked
    through its public API: the check is Dagster's own, so what passes here also loads."""
    try:
        with warnings.catch_warnings():  # the real schedule repeats any warning about the cron
            warnings.simplefilter("ignore")
            dg.ScheduleDefinition(name="cron_check", cron_schedule=cron, job_name="cron_check")
    except dg.DagsterInvalidDefinitionError:
        return False
    return True


def backup_settings_from_environment() -> BackupSettingsResource:
    cron = dg.EnvVar("GDX_BACKUP_CRON").get_value(DEFAULT_BACKUP_CRON) or DEFAULT_BACKUP_CRON
    if not is_schedulable(cron):
        raise SettingsError(f"GDX_BACKUP_CRON={cron!r} is not a cron expression (five fields, e.g. {DEFAULT_BACKUP_CRON!r})")
    retention_text = dg.EnvVar("GDX_BACKUP_RETENTION").get_value(str(DEFAULT_RETENTION)) or str(DEFAULT_RETENTION)
    try:
        retention = int(retention_text)
    except ValueError:
        retention = 0
    if retention < 1:
        raise SettingsError(f"GDX_BACKUP_RETENTION={retention_text!r} must be a whole number of backups to keep, at least 1")
    codec = dg.EnvVar("GDX_BACKUP_CODEC").get_value(DEFAULT_CODEC) or DEFAULT_CODEC
    return BackupSettingsResource(cron=cron, retention=retention, codec=codec)


@cache
def code_location_backup_settings() -> BackupSettingsResource:
    """The code location's backup settings, read from the environment once per process."""
    return backup_settings_from_environment()
