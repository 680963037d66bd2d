"""Datasets: ``split`` (filter, index, split, candidates), ``formats`` (importers), ``dataset`` (reader)."""
