"""Model cards for hf_detr models, the folder a model is saved as (`save_model_folder`: with the card and an
Inference Endpoints handler) and `push_to_hub` of that folder, optionally with a Space.

Cards declare `library_name: transformers`: the models load through transformers' Auto classes and `pipeline` with
`trust_remote_code=True` (the code travels with the weights), so the Hub's transformers snippets and download
counting apply; `hf_detr` is not a library the Hub knows. The `hf_detr` tag marks the implementation.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.errors import EntryNotFoundError

from ..modeling.configuration_hf_detr import HfDetrConfig
from ..modeling.errors import HfDetrInputTypeError
from .space import MODEL_CODE_REQUIREMENTS, requirements, save_space_folder

PAPER_URL = "https://arxiv.org/abs/2005.12872"
CARD_TAGS = ("hf_detr", "detr", "object-detection", "vision")

_CITATION = """\
```bibtex
@inproceedings{carion2020detr,
  title     = {End-to-End Object Detection with Transformers},
  author    = {Carion, Nicolas and Massa, Francisco and Synnaeve, Gabriel and Usunier, Nicolas and Kirillov, Alexander
               and Zagoruyko, Sergey},
  booktitle = {European Conference on Computer Vision (ECCV)},
  year      = {2020}
}
```"""


def _architecture(config: HfDetrConfig) -> str:
    dilation = " with a dilated last stage (DC5, output stride 16)" if config.dilation else ""
    return (
        f"timm backbone `{config.backbone}`{dilation}, a transformer of {config.encoder_layers} encoder and "
        f"{config.decoder_layers} decoder layers of width {config.d_model}, {config.num_queries} object queries and "
        f"{config.num_labels} classes"
    )


def _usage(repo_id: str, segmentation: bool) -> str:
    """The card's "How to use" and "How to fine-tune" sections."""
    if segmentation:
        return f"""## How to use

The code is stored next to the weights, so only `transformers` and `timm` are needed (`trust_remote_code=True`):

```python
from PIL import Image
from transformers import pipeline

segmenter = pipeline("image-segmentation", model="{repo_id}", trust_remote_code=True)
segmenter(Image.open("image.jpg"), subtask="panoptic")  # [{{"score": ..., "label": ..., "mask": PIL image}}, ...]
```

With the model and image processor:

```python
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageSegmentation

image = Image.open("image.jpg")
processor = AutoImageProcessor.from_pretrained("{repo_id}", trust_remote_code=True)
model = AutoModelForImageSegmentation.from_pretrained("{repo_id}", trust_remote_code=True).eval()
inputs = processor(images=image, return_tensors="pt")
with torch.no_grad():
    outputs = model(**inputs)  # logits, pred_boxes and pred_masks [1, queries, height / 4, width / 4]
panoptic = processor.post_process_panoptic_segmentation(outputs, target_sizes=[image.size[::-1]])[0]
# panoptic["segmentation"]: [height, width] segment ids; panoptic["segments_info"]: id, label_id, score per segment
```

## How to fine-tune

Load it with your label map; the class head is re-initialized for the new classes, everything else is kept:

```python
model = AutoModelForImageSegmentation.from_pretrained(
    "{repo_id}", trust_remote_code=True, id2label=id2label, label2id=label2id, ignore_mismatched_sizes=True
)
```

Batches hold `pixel_values`, `pixel_mask` and `labels`, one dict per image with `class_labels` `[n]`, `boxes`
`[n, 4]` and `masks` `[n, height, width]`, as the image processor produces from COCO instance or panoptic annotations
with `return_segmentation_masks=True`. The paper trains the detector first and then the mask head alone
(`model.freeze_detection()`); training both at once works too.
"""
    return f"""## How to use

The code is stored next to the weights, so only `transformers` and `timm` are needed (`trust_remote_code=True`):

```python
from PIL import Image
from transformers import pipeline

detector = pipeline("object-detection", model="{repo_id}", trust_remote_code=True)
detector(Image.open("image.jpg"), threshold=0.7)  # [{{"score": ..., "label": ..., "box": {{"xmin": ...}}}}, ...]
```

With the model and image processor:

```python
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForObjectDetection

image = Image.open("image.jpg")
processor = AutoImageProcessor.from_pretrained("{repo_id}", trust_remote_code=True)
model = AutoModelForObjectDetection.from_pretrained("{repo_id}", trust_remote_code=True).eval()
inputs = processor(images=image, return_tensors="pt")
with torch.no_grad():
    outputs = model(**inputs)  # logits [1, queries, labels + 1], pred_boxes [1, queries, 4] (cx, cy, w, h)
detections = processor.post_process_object_detection(outputs, threshold=0.7, target_sizes=[image.size[::-1]])
```

## How to fine-tune

Load it with your label map; the class head is re-initialized for the new classes, everything else is kept:

```python
model = AutoModelForObjectDetection.from_pretrained(
    "{repo_id}", trust_remote_code=True, id2label=id2label, label2id=label2id, ignore_mismatched_sizes=True
)
```

Train it with `transformers.Trainer` (`remove_unused_columns=False`) on batches of `pixel_values`, `pixel_mask` and
`labels`, one dict per image with `class_labels` `[n]` and `boxes` `[n, 4]` (normalized center x, center y, width,
height) as the image processor produces from COCO annotations. The DETR recipe trains the backbone with a 10x lower
learning rate than the transformer; `model.freeze_backbone()` trains the transformer and heads alone.
"""


def model_card(
    config: HfDetrConfig,
    repo_id: str,
    *,
    coco_ap: float | None = None,
    coco_pq: float | None = None,
    source: str | None = None,
    tags: tuple[str, ...] | list[str] = (),
) -> ModelCard:
    """The model card (README.md with Hub metadata) of a model with `config`, to be loaded from `repo_id` (a Hub
    repository or local folder); a segmentation model's (`config.predicts_masks`) shows the segmentation API.

    `coco_ap` / `coco_pq`: the COCO 2017 val box AP (Table 1) or PQ (Table 5) the paper reports for this architecture,
    recorded in `model-index` with COCO as the training data set; None for a model of unknown provenance (e.g. a
    fine-tuned one). `source`: one sentence on where the weights come from.
    """
    name = repo_id.rstrip("/").split("/")[-1]
    segmentation = config.predicts_masks
    task = "image-segmentation" if segmentation else "object-detection"
    if coco_pq is not None:
        result, metric, table, dataset = coco_pq, "PQ", "Table 5", "COCO 2017 panoptic"
    else:
        result, metric, table, dataset = coco_ap, "AP", "Table 1", "COCO 2017"
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag=task,
        license="apache-2.0",
        tags=list(dict.fromkeys([*CARD_TAGS, *(("image-segmentation",) if segmentation else ()), *tags])),
        datasets=["coco"] if result is not None else None,
        model_name=name if result is not None else None,
        eval_results=None
        if result is None
        else [
            EvalResult(
                task_type=task,
                dataset_type="coco",
                dataset_name=dataset,
                dataset_split="validation",
                metric_type="mAP" if metric == "AP" else "PQ",
                metric_name=metric,
                metric_value=result,
                source_name=f"DETR paper, {table}",
                source_url=PAPER_URL,
            )
        ],
    )
    labels = ", ".join(f"{i}: {label}" for i, label in sorted(config.id2label.items()))
    results = "" if result is None else f"\n\nThe paper reports **{result} {metric}** on {dataset} val for this model."
    origin = "" if source is None else f"\n\n{source}"
    kind = "panoptic segmentation model (the detector with its mask head)" if segmentation else "object detector"
    body = f"""
# {name}

DETR (DEtection TRansformer, [Carion et al. 2020]({PAPER_URL})) {kind}, in hf_detr's Hugging Face-native
implementation: {_architecture(config)}.{results}{origin}

Labels: {labels}.

{_usage(repo_id, segmentation)}
## Citation

{_CITATION}
"""
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n{body}")


def save_model_folder(
    folder: str | os.PathLike,
    model: Any,
    image_processor: Any = None,
    card: ModelCard | None = None,
    state_dict: dict[str, Any] | None = None,
) -> None:
    """Write `model.save_pretrained`'s files (weights, config with `auto_map`, the model code), the image processor's
    `preprocessor_config.json`, the card as `README.md` (default: `model_card(model.config, folder)`) and, for
    Inference Endpoints, `handler.py` (`EndpointHandler`, see `hub/handler.py`) with the `requirements.txt` of the
    model code to `folder`. `state_dict`: the weights to write, e.g. accelerate's `get_state_dict` of a distributed
    model."""
    model.save_pretrained(folder, state_dict=state_dict)
    if image_processor is not None:
        image_processor.save_pretrained(folder)
    (card or model_card(model.config, str(folder))).save(os.path.join(folder, "README.md"))
    shutil.copyfile(Path(__file__).with_name("handler.py"), Path(folder) / "handler.py")
    (Path(folder) / "requirements.txt").write_text("\n".join(requirements(MODEL_CODE_REQUIREMENTS)) + "\n")


def push_to_hub(
    model: Any,
    repo_id: str,
    image_processor: Any = None,
    *,
    card: ModelCard | None = None,
    commit_message: str | None = None,
    private: bool | None = None,
    token: bool | str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    tags: list[str] | str | None = None,
    space: bool | str = False,
) -> Any:
    """Upload the folder `save_model_folder` writes (model, code, image processor, card, endpoint handler) in one
    commit.

    Without `card`, the repository's own card is kept (with `tags` added), as `transformers` does, and a repository
    without one gets `model_card(model.config, repo_id)` rather than transformers' generic template. With `space`
    (True: a Space of the same id; or a Space id), a Gradio Space running `hf-detr app`'s page on the model is
    created or updated too (`space.save_space_folder`), in one commit after the model's. Returns the model's
    `CommitInfo`. (`model.push_to_hub` is transformers' own: it works too, with transformers' card.)
    """
    if not isinstance(space, (bool, str)) or space == "":
        raise HfDetrInputTypeError(f"space must be True, False or a Space id such as 'owner/name', got {space!r}")
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    tags = [tags] if isinstance(tags, str) else list(tags or [])
    tags = list(dict.fromkeys([*tags, *(model.model_tags or [])]))
    if card is None:
        try:
            card = ModelCard.load(repo_id, token=token)
            card.data.tags = list(dict.fromkeys([*(card.data.tags or []), *tags]))
        except EntryNotFoundError:
            card = model_card(model.config, repo_id, tags=tags)
    with tempfile.TemporaryDirectory() as folder:
        save_model_folder(folder, model, image_processor, card)
        commit = api.upload_folder(
            folder_path=folder,
            repo_id=repo_id,
            revision=revision,
            create_pr=create_pr,
            commit_message=commit_message or f"Upload {type(model).__name__}",
        )
    if space:
        space_id = api.create_repo(
            repo_id if space is True else space, repo_type="space", space_sdk="gradio", private=private, exist_ok=True
        ).repo_id
        with tempfile.TemporaryDirectory() as folder:
            save_space_folder(folder, repo_id)
            api.upload_folder(
                folder_path=folder, repo_id=space_id, repo_type="space", commit_message=f"The hf_detr app of {repo_id}"
            )
    return commit


__all__ = ["model_card", "push_to_hub", "save_model_folder"]
