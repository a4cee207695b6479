"""Reads. Query logic for views, APIs and tasks lives here, split by area like services."""
