"""Every PostgreSQL advisory lock key Herald takes, in one place so that no two collide.

A key shared by mistake makes unrelated work wait on each other (a process holding a leader's
session lock would block every other process's migrations, for ever).
"""

import zlib

OUTBOX_LOCK_KEY = 0x48455241  # transaction: outbox order equals commit order
RELAY_LOCK_KEY = 0x48455242  # session: one outbox relay per database
MIGRATION_LOCK_KEY = 0x48455243  # transaction: one process migrates at a time
SCHEDULER_LOCK_KEY = 0x48455244  # session: one sweeping scheduler per database
REINDEX_LOCK_KEY = 0x48455245  # session: one background search index rebuild per database

# Locks derived from data a client chooses (ids, search criteria) use the two-int form
# pg_advisory_xact_lock(class, key): that key space never meets the single-bigint keys above,
# so no crafted id can make one wait on a lock a process holds for its whole life.
CONDITIONAL_CREATE_LOCK_CLASS = 0x4845  # transaction: conditional creates with one criteria
CAREPLAN_LOCK_CLASS = 0x4846  # transaction: one reconciler per CarePlan


def int4_key(text: str) -> int:
    """A signed 32-bit key for the two-int form, from any text."""
    return zlib.crc32(text.encode()) - 2**31
