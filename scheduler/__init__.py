"""CarePlan scheduling: Timing engine, Task materialisation, due wake-ups. Not built yet."""
