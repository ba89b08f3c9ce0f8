"""The one exception type users see.

Everything that is the user's fault (a missing file, a bad prompt, a checkpoint of the wrong kind) is raised as
`I2TError` with a one-line message; the CLI prints the message and exits with code 2 instead of a traceback.
"""


class I2TError(Exception):
    """A user-facing error whose message is one line saying what went wrong and how to fix it."""
