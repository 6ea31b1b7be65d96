"""Repositories: every query lives here. They flush but never commit."""
