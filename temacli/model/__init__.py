"""Models: TEMA-LLM (tema.py), the SASRec and GRU4Rec baselines (baselines.py), the shared attention
encoder (layers.py), the model registry (registry.py), building and scoring (api.py) and the model
folder that ``train`` writes and ``eval``/``recommend`` read (folder.py)."""
