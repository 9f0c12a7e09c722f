"""Domain rules, each written once. Routers and the CLI call these; they never touch HTTP."""
