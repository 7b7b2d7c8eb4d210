"""Errors a user can cause with a backup or a restore. Each message says what was wrong and
what to do, and nothing was changed when one is raised."""

from __future__ import annotations

from collections.abc import Iterable

from gdx_pipeline.dictionary import UnknownTableError


class BackupError(Exception):
    """A backup or restore that cannot be done as asked; nothing was changed."""


class BackupNotFoundError(BackupError, LookupError):
    """The named backup (or any backup, for `latest`) does not exist."""


class UnknownBackupTableError(UnknownTableError, BackupNotFoundError):
    """A table that has no backups: the dictionary's "unknown table" error, and a backup error
    like every refusal of a backup or restore."""

    def __init__(self, name: str, backup_tables: Iterable[str]):
        super().__init__(name, backup_tables, listing="backups exist for")


class InvalidBackupNameError(BackupError, ValueError):
    """The backup was not named as `latest` or a plain file name of the table's backup folder."""


class RestoreRefusedError(BackupError):
    """The backup failed verification, or restoring it would break foreign keys."""

    def __init__(self, message: str, details: dict[str, object] | None = None):
        super().__init__(message)
        self.details = details or {}
