"""Browser pages, one module per area."""
