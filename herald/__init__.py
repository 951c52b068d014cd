"""Herald service shell: settings, CLI, app assembly, logging and metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from herald.app import create_app
    from herald.runtime import Runtime
    from herald.settings import Settings
else:
    from fhirstore.surface import LazyExports

    __getattr__ = LazyExports(__name__)

__all__ = ["Runtime", "Settings", "create_app"]
