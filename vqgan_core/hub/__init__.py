"""Weights on disk and on the web: checkpoint IO, loading, released models by name, downloads, the demo assets."""
