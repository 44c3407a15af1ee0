"""One exception type for mistakes a user can fix (bad input, missing model, missing key).

The CLI prints a `UserError` as one line and exits with status 2; anything else is a bug
and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input or environment, with a message saying what to do."""
