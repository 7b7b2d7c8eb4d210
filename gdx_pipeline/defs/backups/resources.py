"""Backup settings: when the nightly backup runs, how many backups to keep, which Avro codec.

From environment variables, with defaults that work on a fresh clone: `GDX_BACKUP_CRON`
(default `0 2 * * *`, read as UTC), `GDX_BACKUP_RETENTION` (backups kept per table, default 14)
and `GDX_BACKUP_CODEC` (`deflate` by default; `null`, or `snappy`/`zstandard` where their
libraries are installed).
"""

import dagster as dg
from dagster._utils.schedules import is_valid_cron_string
from pydantic import Field

from gdx_pipeline.core.backups import DEFAULT_CODEC, DEFAULT_RETENTION, check_codec

DEFAULT_BACKUP_CRON = "0 2 * * *"


class BackupSettingsResource(dg.ConfigurableResource):
    """How backups are taken and kept."""

    cron: str = Field(default=DEFAULT_BACKUP_CRON, description="When nightly_backup_schedule runs (cron, UTC).")
    retention: int = Field(default=DEFAULT_RETENTION, ge=1, description="Backups kept per table; older ones are deleted after each backup.")
    codec: str = Field(default=DEFAULT_CODEC, description="Avro codec: null, deflate, or snappy/zstandard where installed.")

    def checked_codec(self) -> str:
        """The codec, or a BackupError naming the ones that work here."""
        return check_codec(self.codec)


class BackupSettingsError(ValueError):
    """A backup setting in the environment is not usable; the message says which and why."""


def backup_settings_from_environment() -> BackupSettingsResource:
    cron = dg.EnvVar("GDX_BACKUP_CRON").get_value(DEFAULT_BACKUP_CRON) or DEFAULT_BACKUP_CRON
    if not is_valid_cron_string(cron):
        raise BackupSettingsError(f"GDX_BACKUP_CRON={cron!r} is not a cron expression (five fields, e.g. {DEFAULT_BACKUP_CRON!r})")
    retention_text = dg.EnvVar("GDX_BACKUP_RETENTION").get_value(str(DEFAULT_RETENTION)) or str(DEFAULT_RETENTION)
    try:
        retention = int(retention_text)
    except ValueError:
        retention = 0
    if retention < 1:
        raise BackupSettingsError(f"GDX_BACKUP_RETENTION={retention_text!r} must be a whole number of backups to keep, at least 1")
    codec = dg.EnvVar("GDX_BACKUP_CODEC").get_value(DEFAULT_CODEC) or DEFAULT_CODEC
    return BackupSettingsResource(cron=cron, retention=retention, codec=codec)
