"""Shipping quotes: a service guarded by pybreaker, and one using the httpx breaker transport."""
