"""Language-model access for the tag stages: LiteLLM client, response cache, offline local model."""
