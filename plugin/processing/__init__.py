"""Processing provider ``sarflood`` and its algorithms (one module per algorithm)."""
