"""Errors raised by the repository layer; each names the object it concerns."""


class RepoError(Exception):
    """Base of every error the repository layer raises."""


class BackendError(RepoError):
    """A storage backend failed to read, write, list or delete an object."""


class TransientError(BackendError):
    """A failure worth retrying: a timeout, a dropped connection, a 5xx answer."""


class ObjectNotFound(BackendError):
    """The named object does not exist in the backend."""


class RepositoryNotFound(RepoError):
    """There is no repository at the given location."""


class RepositoryExists(RepoError):
    """init was asked to create a repository where one already exists."""


class RepositoryLocked(RepoError):
    """Another process holds a conflicting lock."""


class LockLost(RepoError):
    """Our lock expired or vanished: writing on could corrupt the repository."""


class WrongPassword(RepoError):
    """No key file of the repository opens with the given password."""


class DamagedObject(RepoError):
    """An object failed authentication, does not match its name, or cannot be decoded."""


class BlobNotFound(RepoError):
    """A blob referenced by a tree or snapshot is not in the index."""


class SnapshotNotFound(RepoError):
    """No snapshot matches the given id, prefix or filter."""


class PathNotFound(RepoError):
    """A path does not exist inside a snapshot."""


class SourceError(RepoError):
    """The backup source cannot be used at all (e.g. none of the paths exist)."""
