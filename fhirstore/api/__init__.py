"""The FHIR R4B REST API (FastAPI): interactions, Bundles, CapabilityStatement, error mapping."""
