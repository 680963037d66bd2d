"""LLM tags: Algorithm 1 (``generate``) and item-tag matching (``match``)."""
