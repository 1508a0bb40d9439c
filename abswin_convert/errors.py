"""The one exception type for problems a user can cause (bad files, bad options)."""


class AbswinError(Exception):
    """A user-facing error: the message says what was found and what to do.

    The CLI prints it as one line on stderr and exits with status 2.
    """
