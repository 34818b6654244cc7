"""A stock-level service on a real Redis, and the chaos suite that proves its breaker."""
