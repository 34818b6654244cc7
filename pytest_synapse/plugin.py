"""pytest entry point for Synapse (registered through the ``pytest11`` entry point).

Kept thin and cheap to import: heavy modules are imported only when a fixture needs them.
"""
