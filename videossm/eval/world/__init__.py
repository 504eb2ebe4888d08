"""World metrics (issue 5)."""
