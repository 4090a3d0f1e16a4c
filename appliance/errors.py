"""Exception hierarchy of the appliance core.

Every error the core raises on purpose derives from :class:`ApplianceError`; each
family carries the CLI exit code it maps to, so ``appliance`` commands end with a
meaningful status (in the manner of python-escpos' ``resultcode``).
"""

from __future__ import annotations


class ApplianceError(Exception):
    """Base class of every error raised on purpose by the appliance."""

    exit_code = 1


class ConfigError(ApplianceError):
    """The configuration file or a setting in it is wrong."""

    exit_code = 2


class StoreError(ApplianceError):
    """An instance could not be stored."""

    exit_code = 3


class InvalidDataset(StoreError):
    """The received data set cannot be parsed or lacks a required UID."""


class OutOfResources(StoreError):
    """The disk holding the store is below the configured free-space limit."""


class IndexFailure(StoreError):
    """The SQLite index could not record an instance."""


class NotFound(ApplianceError):
    """A study, series, instance or job asked for does not exist."""

    exit_code = 4


class NetworkError(ApplianceError):
    """A remote DICOM node could not be reached or refused us."""

    exit_code = 5
