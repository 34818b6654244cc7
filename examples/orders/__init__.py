"""The demo service: an orders HTTP API that checks stock with an inventory service."""
