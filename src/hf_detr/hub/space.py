"""The files that travel with a model beyond hf_detr: a Hugging Face Space running `hf-detr app`'s page
(`save_space_folder`, uploaded by `push_to_hub(..., space=True)`) and the requirements of the Inference Endpoints
handler written into every model folder (`hub/handler.py`, `cards.save_model_folder`).

A Space holds `app.py` (`hf_detr.apps.app.create_app` on the model's Hub id: the same page as `hf-detr app`),
`requirements.txt`, a `README.md` with the Space's settings, and hf_detr's own code under `hf_detr/`, from which
`app.py` imports, so that the Space does not depend on where hf_detr is published. Gradio comes with the Space's SDK
(`sdk_version`, the version installed here when there is one).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
from collections.abc import Collection
from pathlib import Path

from huggingface_hub import SpaceCard, SpaceCardData
from packaging.requirements import Requirement

PACKAGE = Path(__file__).resolve().parents[1]
# what the model code imports (hf_detr/modeling): the handler's requirements
MODEL_CODE_REQUIREMENTS = ("torch", "torchvision", "timm", "transformers")

_APP = '''"""The hf_detr page of {model_id}: `hf-detr app {model_id}` as a Space (written by
hf_detr.hub.push_to_hub(..., space=True); hf_detr's code is in hf_detr/)."""

from hf_detr.apps.app import create_app

create_app({model_id!r}).launch()
'''


def requirements(names: Collection[str] | None = None, extras: Collection[str] = ()) -> list[str]:
    """hf_detr's requirements as its installed metadata states them (the versions pyproject.toml pins): those of
    `names` (default: all of the base ones), and those of `extras`."""
    found = []
    for line in importlib.metadata.requires("hf_detr") or []:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):  # a base requirement
            wanted = names is None or requirement.name in names
        else:
            wanted = any(requirement.marker.evaluate({"extra": extra}) for extra in extras)
            requirement.marker = None  # installed as it is, not as an extra of hf_detr
        if wanted:
            found.append(str(requirement))
    return found


def save_space_folder(folder: str | os.PathLike, model_id: str) -> None:
    """Write the Space of the model `model_id` (a Hub repository id) to `folder`: `app.py`, `requirements.txt`
    (hf_detr's requirements and its `video` extra's), `README.md` (the Space's settings: Gradio SDK, `app.py`, the
    model) and hf_detr's code under `hf_detr/`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "app.py").write_text(_APP.format(model_id=model_id))
    (folder / "requirements.txt").write_text("\n".join(requirements(extras=["video"])) + "\n")
    shutil.copytree(
        PACKAGE, folder / "hf_detr", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), dirs_exist_ok=True
    )
    try:
        gradio = importlib.metadata.version("gradio")
    except importlib.metadata.PackageNotFoundError:  # the Hub then picks its default version
        gradio = None
    name = model_id.split("/")[-1]
    data = SpaceCardData(
        title=name,
        sdk="gradio",
        sdk_version=gradio,
        app_file="app.py",
        models=[model_id],
        license="apache-2.0",
        tags=["hf_detr", "object-detection"],
    )
    card = SpaceCard(f"""---
{data.to_yaml()}
---

# {name}

Object detection with [{model_id}](https://huggingface.co/{model_id}), a DETR in hf_detr's Hugging Face-native
implementation: upload an image or a short video and see its detections, as a picture, a table and JSON.
`app.py` runs the page of `hf-detr app` (`hf_detr.apps.app.create_app`) on the model; hf_detr's code is in
`hf_detr/`.
""")
    card.save(folder / "README.md")
