"""Helpers shared by test suites: a running Herald in-process, database URL choices."""
