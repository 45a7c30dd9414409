"""The one exception type users see: its message is a single sentence saying what is wrong."""


class MtprunError(Exception):
    """A user-facing failure (bad file, flag, prompt or session); the CLI prints it and exits non-zero."""
