"""The paper's four COCO detectors and two panoptic models as Hub repository folders: `config.json`,
`preprocessor_config.json` and a model card `README.md` each, generated from the code so they stay consistent with it.

    python -m hf_detr.hub.hub_configs [ROOT]      # writes ROOT/<name>/ for every model (default ROOT: ./hub_configs)

A folder plus the weights converted from the original checkpoint (`hf-detr convert --from original <url> <dir>
[--backbone resnet101] [--dilation]`) is a complete Hub repository.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers.dynamic_module_utils import custom_object_save

from .. import presets
from ..builder import model_class
from .cards import model_card

# the Hub namespace the cards' usage snippets load from
HUB_NAMESPACE = "hf-detr"


@dataclass(frozen=True)
class PaperModel:
    """One row of Table 1 (box AP) or Table 5 (panoptic PQ) of the DETR paper, with the released checkpoint of
    facebookresearch/detr's model zoo; its architecture is the preset of the same name."""

    name: str
    coco_result: float
    checkpoint_url: str


PAPER_MODELS = (
    PaperModel("detr-resnet-50", 42.0, "https://dl.fbaipublicfiles.com/detr/detr-r50-e632da11.pth"),
    PaperModel("detr-resnet-50-dc5", 43.3, "https://dl.fbaipublicfiles.com/detr/detr-r50-dc5-f0fb7ef5.pth"),
    PaperModel("detr-resnet-101", 43.5, "https://dl.fbaipublicfiles.com/detr/detr-r101-2c7b67e5.pth"),
    PaperModel("detr-resnet-101-dc5", 44.9, "https://dl.fbaipublicfiles.com/detr/detr-r101-dc5-a2e86def.pth"),
    PaperModel("detr-resnet-50-panoptic", 43.4, "https://dl.fbaipublicfiles.com/detr/detr-r50-panoptic-00ce5173.pth"),
    PaperModel("detr-resnet-101-panoptic", 45.1, "https://dl.fbaipublicfiles.com/detr/detr-r101-panoptic-40021d53.pth"),
)


def write_hub_config(model: PaperModel, folder: str | Path) -> None:
    """Write `config.json`, `preprocessor_config.json` and `README.md` of `model` into `folder`.

    The JSON files are what `save_pretrained` writes (with `auto_map` for `trust_remote_code`), without the code files
    it copies next to them and without `transformers_version`, so the folders only change when the code does.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    preset = presets.get(model.name)
    config = preset.config()
    with torch.device("meta"):  # only the config's auto_map and architectures are needed, not the weights
        network = model_class(config)(config)
    config.architectures = [type(network).__name__]
    with tempfile.TemporaryDirectory() as scratch:
        custom_object_save(network, scratch, config=config)  # fills config.auto_map
        config.save_pretrained(scratch)
        preset.image_processor().save_pretrained(scratch)
        for name in ("config.json", "preprocessor_config.json"):
            content = json.loads(Path(scratch, name).read_text())
            content.pop("transformers_version", None)
            (folder / name).write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")
    file_name = model.checkpoint_url.rsplit("/", 1)[-1]
    command = f"hf-detr convert --from original {file_name} OUT_DIR --backbone {config.backbone}"
    source = (
        f"Its weights are the [original checkpoint]({model.checkpoint_url}) of facebookresearch/detr, converted with "
        f"`{command}{' --dilation' if config.dilation else ''}`."
    )
    result = {"coco_pq" if config.task == "panoptic" else "coco_ap": model.coco_result}
    card = model_card(config, f"{HUB_NAMESPACE}/{model.name}", source=source, **result)
    card.save(folder / "README.md")


def write_hub_configs(root: str | Path) -> None:
    """Write every paper model's folder under `root`, replacing what was there."""
    for model in PAPER_MODELS:
        folder = Path(root) / model.name
        shutil.rmtree(folder, ignore_errors=True)
        write_hub_config(model, folder)


if __name__ == "__main__":
    write_hub_configs(sys.argv[1] if len(sys.argv) > 1 else "hub_configs")
