"""The commands: `colorize` (your photos) and `colorize-review` (the FiftyOne App)."""
