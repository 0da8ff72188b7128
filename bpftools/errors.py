"""The one exception type whose message is shown to the user as a single line."""


class BpftoolsError(Exception):
    """A user-facing failure: bad input, missing privilege or kernel feature, compile error."""

    exit_code = 1
