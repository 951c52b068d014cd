"""Herald's test suites; `tests.support` is the infrastructure they and `bench/` share."""
