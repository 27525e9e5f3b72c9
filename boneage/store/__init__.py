"""The shipped artifacts: where they live, who produces them, and the manifest that says they belong together."""
