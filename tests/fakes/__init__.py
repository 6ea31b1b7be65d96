"""In-memory adapters of our ports, for unit tests (never imported by deployed code)."""
