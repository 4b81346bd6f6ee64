"""The data layer's errors: each message says what happened and what to do."""
from __future__ import annotations

class GalmetaDataError(RuntimeError):
    """Base class of the data layer's errors; the message says what to do."""


class NoDataError(GalmetaDataError):
    """No cached table, no snapshot, and no way to fetch one."""


class SkyServerError(GalmetaDataError):
    """SkyServer answered with an error or an unreadable response."""


class CorruptCacheError(GalmetaDataError):
    """A cached table or snapshot file cannot be read or fails validation."""


class MissingColumnsError(GalmetaDataError):
    """A table lacks columns the course needs."""


class MalformedTableError(GalmetaDataError):
    """A table has the course's columns, but a value of the wrong type, a blank where a value is needed, or an inexact id."""


class SnapshotExistsError(GalmetaDataError):
    """An import would replace a different snapshot of the same name."""


class TableTooLargeError(GalmetaDataError):
    """A table file is larger (uncompressed), longer or wider than the import limits allow."""


class SnapshotNameError(GalmetaDataError, ValueError):
    """A snapshot name breaks the naming rule (:func:`galmeta.data.home.check_snapshot_name`)."""
