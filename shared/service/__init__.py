"""Use cases shared by the API and the worker. They take a session and never commit:
the entry point (request, task) owns the transaction and dispatches after commit."""
