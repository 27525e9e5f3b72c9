"""Clinical rules against growth references: maturity status (delayed / normal / advanced)."""
