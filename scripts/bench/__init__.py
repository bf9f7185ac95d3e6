"""The docagents benchmark suite: ``python -m scripts.bench [--quick]`` (see README.md)."""
