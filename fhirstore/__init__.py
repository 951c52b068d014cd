"""FHIR R4B store: REST API, persistence, search and the transactional outbox."""
