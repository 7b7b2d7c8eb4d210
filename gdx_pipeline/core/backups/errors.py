"""Errors a user can cause with a backup or a restore. Each message says what was wrong and
what to do, and nothing was changed when one is raised."""

from __future__ import annotations


class BackupError(Exception):
    """A backup or restore that cannot be done as asked; nothing was changed."""


class BackupNotFoundError(BackupError, LookupError):
    """The named backup (or any backup, for `latest`) does not exist."""


class InvalidBackupNameError(BackupError, ValueError):
    """The backup was not named as `latest` or a plain file name of the table's backup folder."""


class RestoreRefusedError(BackupError):
    """The backup failed verification, or restoring it would break foreign keys."""

    def __init__(self, message: str, details: dict[str, object] | None = None):
        super().__init__(message)
        self.details = details or {}
