"""Which tier each page gets: age decay, token budgets, pins. Pure functions over small records (stdlib only)."""
