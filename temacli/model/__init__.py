"""The TEMA-LLM model (tema.py), the SASRec and GRU4Rec baselines (baselines.py), the shared
attention encoder (layers.py) and the loading interface for evaluation (api.py)."""
