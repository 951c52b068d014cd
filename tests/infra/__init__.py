"""Real services (Kafka, PostgreSQL) started on 127.0.0.1 for the test suite."""
