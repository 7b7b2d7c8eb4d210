"""The two ways reading a landing file fails as a whole (single rows never raise: they are
reported in their block)."""


class UnreadableFileError(Exception):
    """The file as a whole cannot be read; it goes to quarantine with this message."""


class FileChangedError(Exception):
    """The file changed while it was being read; what was read is not applied."""
