"""What the test suites and `bench/` share: the real services (`kafka`, `postgres`, `smtp`,
HTTP `receiver`s), a running Herald (`herald`, `process`), database and shape choices
(`databases`), signed tokens, FHIR packages and waiting helpers. Import as `tests.support.<module>`
from the repository root (pytest's `pythonpath`, or `python -m bench.<name>`)."""
