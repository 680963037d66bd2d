"""Importers for published, pre-split benchmarks (they write the same artifacts as ``data split``)."""
