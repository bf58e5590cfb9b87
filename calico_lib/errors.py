"""Typed errors. Every message is one line that names the field and what is allowed."""

from __future__ import annotations


class CalicoError(Exception):
    """Base class of every error this library raises on purpose."""

    #: the exit code calicoctl uses for this error (2 = bad input, 1 = failure)
    exit_code = 1


class ValidationError(CalicoError, ValueError):
    """Bad input: the message names the field and the allowed values."""

    exit_code = 2

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class NotFoundError(CalicoError, LookupError):
    exit_code = 2


class AlreadyExistsError(CalicoError):
    exit_code = 2


class InUseError(CalicoError):
    """The object is still referenced (a pool with allocations, an address in use)."""

    exit_code = 2


class PoolExhaustedError(CalicoError):
    """No free address is left for the request; nothing was allocated."""


class ConflictError(CalicoError):
    """A transaction kept losing races with other writers; nothing was applied."""


class DatastoreError(CalicoError):
    """The datastore failed or cannot be reached; nothing was applied."""


class DatastoreUnavailable(DatastoreError):
    pass


class CompactedError(DatastoreError):
    """A watch asked for revisions the datastore no longer keeps: resync from a list."""


class DatastoreMissing(DatastoreUnavailable):
    """An embedded store that does not exist was opened for reading (nothing was created)."""
