"""The one exception hierarchy of optimem.

Every error a user can cause derives from `OptimemError` and says what was wrong and what to do.
Rooms that may not import optimem (`renderers`, `policies`) raise their own `ValueError` subclasses;
the CLI reports those the same way.
"""

from __future__ import annotations


class OptimemError(Exception):
    """Base class of every error optimem raises on purpose."""


class InputError(OptimemError, ValueError):
    """Input that cannot be used as given (malformed transcript, unreadable file, bad image)."""


class ConfigError(OptimemError, ValueError):
    """A setting, tier, store URL or option that does not exist or does not fit."""


class CheckpointError(OptimemError):
    """A model checkpoint that is missing files, keys, or has keys of the wrong shape."""


class DeviceError(OptimemError):
    """A requested device (e.g. CUDA) that is not available."""


class StoreError(OptimemError):
    """A store that failed or is unreachable; the stored state is left consistent."""


class SessionError(OptimemError, ValueError):
    """An invalid session id, or a session that does not exist."""


class CacheCorruptError(StoreError):
    """A cached vision-token entry whose header or content hash does not check out."""


class ModelError(OptimemError):
    """A model operation that cannot be done (e.g. generating without a decoder)."""
