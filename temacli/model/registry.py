"""The model registry: one line per model kind, from which ``train``, ``build_model`` and the CLI derive.

A :class:`ModelSpec` names the module that holds a model, its config dataclass, the function (or
class) that builds it, the item-side inputs it accepts and the ``temacli train`` flags it takes (flag
-> config field). Nothing else in the package lists model kinds: ``KINDS`` is this table's keys,
``temacli train --model`` checks against it, the CLI refuses a flag the chosen kind does not list,
and ``temacli.model.api.build_model`` builds whatever ``config.json``'s ``kind`` names here.

Adding a baseline is one file and one line (docs/model.md walks through it):

1. ``temacli/model/mybaseline.py`` with a config dataclass (``n_x``, ``n_y``, ``max_len`` and its own
   fields, a ``to_dict()``) and a model class implementing ``temacli.model.layers.Recommender``;
2. a ``ModelSpec("mybaseline", "temacli.model.mybaseline", "MyConfig", "MyModel", ...)`` line in
   ``REGISTRY`` below.

Only the standard library is imported here; the model modules (torch) load when a model is built.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Mapping

from temacli.errors import TemacliError

# item-side inputs a model can take besides the item IDs: frozen features and tags
INPUTS = ("id", "image", "text", "tags")

# flags every model takes, and the TEMA-only ones (flag -> config field)
_COMMON = {"--dim": "dim", "--blocks": "n_blocks", "--heads": "n_heads", "--dropout": "dropout"}
_TEMA = {
    "--dim": "q", "--blocks": "n_blocks", "--heads": "n_heads", "--dropout": "dropout", "--ffn/--no-ffn": "ffn",
    "--alpha": "alpha", "--lambda1": "lambda1", "--lambda2": "lambda2", "--temperature": "temperature",
    "--fusion": "fusion", "--attention": "attention", "--positions": "positions", "--cross-weights": "cross_weights",
}


@dataclass(frozen=True, eq=False)
class ModelSpec:
    """One model kind: where it lives, how it is configured and built, what it accepts."""

    name: str
    module: str  # import path of the module holding the config class and the builder
    config_class: str  # dataclass with n_x, n_y, max_len, its hyper-parameters and to_dict()
    builder: str  # callable(config, **frozen inputs) -> the torch module
    inputs: tuple = ("id",)  # subset of INPUTS; anything beyond "id" is passed to the builder as a keyword
    options: Mapping[str, str] = field(default_factory=dict)  # `temacli train` flag -> config field
    fixed: Mapping[str, Any] = field(default_factory=dict)  # config fields the registry sets (e.g. kind)
    width: str = "dim"  # the config field of the model width (for --dim's check and the memory estimate)
    summary: str = ""

    def accepts(self, name: str) -> bool:
        return name in self.inputs

    def _module(self):
        return importlib.import_module(self.module)

    def config_type(self):
        return getattr(self._module(), self.config_class)

    def make_config(self, n_x: int, n_y: int, **params):
        """The config object; a wrong or unknown field is one line naming ``--model``."""
        try:
            return self.config_type()(n_x=n_x, n_y=n_y, **self.fixed, **params)
        except (TypeError, ValueError) as e:
            raise TemacliError(f"--arch {self.name}: {e}") from None

    def config_from_dict(self, model: Mapping[str, Any], where: str = "config.json"):
        """Rebuild the config stored in a model folder's config.json ``model`` field."""
        try:
            return self.config_type()(**dict(model))
        except (TypeError, ValueError) as e:
            raise TemacliError(
                f"{where}: the 'model' field does not fit --arch {self.name} ({e}); "
                "use the config.json written with these weights, or retrain"
            ) from None

    def build(self, cfg, **frozen):
        """A fresh model; ``frozen`` holds the accepted item-side arrays (image=, text=, tags=)."""
        extra = {k: v for k, v in frozen.items() if self.accepts(k)}
        return getattr(self._module(), self.builder)(cfg, **extra)


REGISTRY: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        ModelSpec("tema", "temacli.model.tema", "TEMAConfig", "TEMA", inputs=INPUTS, options=_TEMA, width="q",
                  summary="TEMA-LLM (Sec. III): id, image, text and tag streams, three attention branches"),
        ModelSpec("sasrec", "temacli.model.baselines", "BaselineConfig", "build_baseline", options=_COMMON,
                  fixed={"kind": "sasrec"}, summary="SASRec on the mixed sequence (item IDs only)"),
        ModelSpec("gru4rec", "temacli.model.baselines", "BaselineConfig", "build_baseline", options=_COMMON,
                  fixed={"kind": "gru4rec"}, summary="GRU4Rec on the mixed sequence (item IDs only)"),
    )
}
KINDS = tuple(REGISTRY)
ALL_OPTIONS = tuple(dict.fromkeys(flag for s in REGISTRY.values() for flag in s.options))


def get(kind: str, where: str = "--arch") -> ModelSpec:
    spec = REGISTRY.get(str(kind).lower()) if kind is not None else None
    if spec is None:
        raise TemacliError(f"{where} {kind}: unknown model kind; choose one of {', '.join(KINDS)}")
    return spec


def params_from_flags(kind: str, given: Mapping[str, Any]) -> dict:
    """Config fields from the CLI's model flags (flag -> value, None = not given); a flag the kind
    does not take is one line."""
    spec = get(kind)
    given = {k: v for k, v in given.items() if v is not None}
    foreign = [k for k in given if k not in spec.options]
    if foreign:
        raise TemacliError(
            f"{', '.join(foreign)}: not an option of --arch {spec.name} "
            f"({'TEMA options' if all(f in _TEMA for f in foreign) else 'unknown options'}); drop them"
        )
    return {spec.options[k]: v for k, v in given.items()}
