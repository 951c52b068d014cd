"""Herald service shell: settings, CLI, app assembly, logging and metrics."""

__version__ = "0.1.0"
