"""The one exception of the report package.

A report is built from files another process wrote; when those files are missing, corrupt or
incompatible the user gets a :class:`ReportError` with a message that names the file and what is
wrong, the CLI exits non-zero, and no partial output is left behind.
"""

from __future__ import annotations

from services.errors import CcsimError

__all__ = ["ReportError"]


class ReportError(CcsimError):
    """A run directory, its results database or a request cannot produce a report."""
