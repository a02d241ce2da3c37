"""One exception type for every user-facing failure.

Library code raises `ScenectlError("what is wrong, naming the thing at fault")`; the CLI prints it as a single
line on stderr and exits with status 2. Anything else is a bug and keeps its traceback.
"""


class ScenectlError(Exception):
    """A bad input or an impossible request, explained in one line."""
