"""Errors a user can cause: the CLI prints their message (one paragraph) and exits non-zero."""


class UserError(Exception):
    """A mistake the user can fix: bad input, missing file, unknown model.

    The message names the file or value and says what to do. The CLI prints it
    without a traceback and exits with `exit_code` (2, as for bad usage).
    """

    exit_code = 2

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code
