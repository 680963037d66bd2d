"""Frozen item features: CLIP image and text embeddings (``clip``), an offline sentence encoder (``text``)."""
