"""temacli: TEMA-LLM cross-domain sequential recommendation as a command-line toolkit.

The library under ``temacli`` is usable from Python without the CLI; ``temacli.cli`` is a thin layer
over it. Heavy dependencies (torch, litellm, open_clip) are imported inside the functions that use them.
"""

__version__ = "0.1.0"
