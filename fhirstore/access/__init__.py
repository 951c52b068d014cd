"""The access boundary: who asks (tokens, principals) and what they may do (scopes, compartment)."""
