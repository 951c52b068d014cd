"""Every PostgreSQL advisory lock key Herald takes, in one place so that no two collide.

A key shared by mistake makes unrelated work wait on each other (a process holding a leader's
session lock would block every other process's migrations, for ever).
"""

OUTBOX_LOCK_KEY = 0x48455241  # transaction: outbox order equals commit order
RELAY_LOCK_KEY = 0x48455242  # session: one outbox relay per database
MIGRATION_LOCK_KEY = 0x48455243  # transaction: one process migrates at a time
SCHEDULER_LOCK_KEY = 0x48455244  # session: one sweeping scheduler per database
