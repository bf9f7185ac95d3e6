"""The docagents daemon: configuration, store, activity sources, supervisor, CLI."""
