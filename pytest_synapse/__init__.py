"""The Synapse pytest plugin: chaos fixtures, breaker assertions, reports and CI gates."""
