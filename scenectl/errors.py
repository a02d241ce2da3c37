"""One exception type for every user-facing failure.

Library code raises `ScenectlError("what is wrong, naming the thing at fault")`; the CLI prints it as a single
line on stderr and exits with status 2. Anything else is a bug and keeps its traceback.
"""


class ScenectlError(Exception):
    """A bad input or an impossible request, explained in one line."""


class OutOfMemory(ScenectlError):
    """The machine's or job's memory ran out while doing `what`: never counted or skipped as a corrupt input."""

    def __init__(self, what: str = ""):
        super().__init__(f"out of memory{' ' + what if what else ''}: a resource limit of this machine or job, not a "
                         "damaged input (free memory, or lower --batch-size / --workers)")


def out_of_memory(e: BaseException) -> bool:
    """Whether `e` says the process ran out of memory (Python's MemoryError, torch's OutOfMemoryError, or torch's
    CPU allocator's RuntimeError): a resource limit, to be reported as such, never as a corrupt input."""
    text = str(e).lower()
    return isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError" or (
        isinstance(e, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text))
