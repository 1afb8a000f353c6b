"""The import paths of the flat layout hf_detr started with (`hf_detr.train`, `hf_detr.metrics`, ...), kept working
until `REMOVED_IN`, with a FutureWarning naming the new path.

Each old path is the module it moved to, the same object under both names (so a monkeypatch or an `isinstance` check
sees one module), imported only when the old path is.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings

REMOVED_IN = "0.3"
MOVED: dict[str, str] = {
    "backbone": "modeling.backbone",
    "coco_labels": "hub.coco_labels",
    "cli": "apps.cli",
    "collate": "data.collate",
    "configuration_hf_detr": "modeling.configuration_hf_detr",
    "convert": "hub.convert",
    "demo": "apps.demo",
    "export": "hub.export",
    "hub_configs": "hub.hub_configs",
    "image_processing_hf_detr": "modeling.image_processing_hf_detr",
    "loss": "modeling.loss",
    "matcher": "modeling.matcher",
    "metrics": "evaluation.metrics",
    "modelcard": "hub.cards",
    "modeling_hf_detr": "modeling.modeling_hf_detr",
    "position_encoding": "modeling.position_encoding",
    "predict": "apps.predict",
    "synthetic": "data.synthetic",
    "train": "training",
    "transformer": "modeling.transformer",
    "transforms": "data.transforms",
    "visualize": "apps.visualize",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self) -> None:
        self._own_specs: dict[str, importlib.machinery.ModuleSpec] = {}

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec:
        package, _, name = fullname.partition(".")
        if package != "hf_detr" or name not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        new = f"hf_detr.{MOVED[spec.name.partition('.')[2]]}"
        warnings.warn(
            f"{spec.name} moved to {new}: import it from there; the old path goes in hf_detr {REMOVED_IN}",
            FutureWarning,
            stacklevel=2,
        )
        module = importlib.import_module(new)
        self._own_specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        # the import system set the alias's spec on the module in between; give it back its own
        module.__spec__ = self._own_specs.pop(module.__name__)

    def get_code(self, fullname: str) -> None:
        # `python -m hf_detr.<old>` asks for code to run; an alias has none, so say where the command went
        new = MOVED[fullname.partition(".")[2]]
        raise ImportError(
            f"{fullname} moved to hf_detr.{new}: run `python -m hf_detr COMMAND` for the hf-detr commands "
            f"(`python -m hf_detr train ...`), or `python -m hf_detr.{new}` for a module that runs as a script"
        )


def install() -> None:
    if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
