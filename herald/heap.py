"""The objects a service keeps for its whole life, taken out of the cycle collector's way.

After start-up the heap holds a few hundred thousand long-lived objects (imported modules, FHIR
models, SQLAlchemy metadata, compiled queries). Each full collection walks all of them, and a
sweep that writes Tasks by the hundred thousand triggers dozens: measured, about 14 s of a 110 s
sweep (`python -m bench.scheduler`, 10,000 CarePlans). Freezing them (`gc.freeze`) after one
collection leaves the collector only the objects made since. Reference counting still frees
frozen objects; only cycles among them would stay, and a service's start-up objects live as
long as it does.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Once per process, at the first Runtime's start (later ones, as in a test session,
    would pay a full collection each for nothing)."""
    if gc.get_freeze_count() == 0:
        gc.collect()
        gc.freeze()
