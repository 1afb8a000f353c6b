"""The Hub: the paper models' hub_configs folders, and push_to_hub of model, image processor and card."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from huggingface_hub import CommitInfo, HfApi, ModelCard, RepoUrl
from huggingface_hub.errors import LocalEntryNotFoundError
from safetensors.torch import load as load_safetensors
from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageSegmentation, AutoModelForObjectDetection

from helpers import randomize_weights, tiny_config_kwargs
from hf_detr import HfDetrConfig, HfDetrForObjectDetection, HfDetrForSegmentation, HfDetrImageProcessor
from hf_detr.hub import push_to_hub
from hf_detr.hub.coco_labels import COCO_ID2LABEL, COCO_PANOPTIC_ID2LABEL
from hf_detr.hub.hub_configs import write_hub_configs

ROOT = Path(__file__).resolve().parents[1]
HUB_CONFIGS = ROOT / "hub_configs"
SRC = ROOT / "src"

# Table 1 of the DETR paper (Carion et al. 2020): backbone, DC5, parameters in millions, COCO val AP
PAPER = {
    "detr-resnet-50": ("resnet50", False, 41, 42.0),
    "detr-resnet-50-dc5": ("resnet50", True, 41, 43.3),
    "detr-resnet-101": ("resnet101", False, 60, 43.5),
    "detr-resnet-101-dc5": ("resnet101", True, 60, 44.9),
}
# Table 5: the panoptic models, backbone and COCO panoptic val PQ
PANOPTIC = {"detr-resnet-50-panoptic": ("resnet50", 43.4), "detr-resnet-101-panoptic": ("resnet101", 45.1)}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_hub_configs_are_what_the_generator_writes(tmp_path):
    write_hub_configs(tmp_path)
    committed, generated = _files(HUB_CONFIGS), _files(tmp_path)
    assert sorted({name.split("/")[0] for name in committed}) == sorted([*PAPER, *PANOPTIC])
    assert committed.keys() == generated.keys()
    stale = [name for name in committed if committed[name] != generated[name]]
    assert not stale, f"{stale} differ from the generator's output; run `python -m hf_detr.hub.hub_configs`"


@pytest.mark.parametrize("name", PAPER)
def test_hub_config_folder_loads_and_builds_the_paper_model(name):
    backbone, dilation, million_params, coco_ap = PAPER[name]
    folder = HUB_CONFIGS / name

    config = AutoConfig.from_pretrained(folder)
    assert isinstance(config, HfDetrConfig)
    assert (config.backbone, config.dilation, config.num_queries) == (backbone, dilation, 100)
    assert config.id2label == COCO_ID2LABEL
    raw = json.loads((folder / "config.json").read_text())
    assert raw["model_type"] == "hf_detr"
    assert raw["auto_map"]["AutoModelForObjectDetection"] == "modeling_hf_detr.HfDetrForObjectDetection"
    processor = AutoImageProcessor.from_pretrained(folder)
    assert isinstance(processor, HfDetrImageProcessor)
    raw = json.loads((folder / "preprocessor_config.json").read_text())
    assert raw["auto_map"]["AutoImageProcessor"] == "image_processing_hf_detr.HfDetrImageProcessor"

    # counted as the paper's code counts them (main.py: parameters with requires_grad; the stem and first ResNet
    # stage are frozen, BatchNorm statistics are buffers)
    with torch.device("meta"):
        meta_model = AutoModelForObjectDetection.from_config(config)
    trainable = sum(p.numel() for p in meta_model.parameters() if p.requires_grad)
    assert abs(trainable / 1e6 - million_params) / million_params < 0.01, trainable

    model = AutoModelForObjectDetection.from_config(config).eval()
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 64, 64))
    assert outputs.logits.shape == (1, 100, 92)
    assert outputs.pred_boxes.shape == (1, 100, 4)

    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "transformers"
    assert card.data.pipeline_tag == "object-detection"
    assert card.data.license == "apache-2.0"
    assert card.data.datasets == ["coco"]
    assert [result.metric_value for result in card.data.eval_results] == [coco_ap]
    assert f"**{coco_ap} AP**" in card.text
    assert "trust_remote_code=True" in card.text and "ignore_mismatched_sizes=True" in card.text


@pytest.mark.parametrize("name", PANOPTIC)
def test_panoptic_hub_config_folder_builds_the_segmentation_model(name):
    backbone, coco_pq = PANOPTIC[name]
    folder = HUB_CONFIGS / name
    config = AutoConfig.from_pretrained(folder)
    assert (config.backbone, config.num_queries, config.id2label) == (backbone, 100, COCO_PANOPTIC_ID2LABEL)
    raw = json.loads((folder / "config.json").read_text())
    assert raw["auto_map"]["AutoModelForImageSegmentation"] == "modeling_hf_detr.HfDetrForSegmentation"
    processor = AutoImageProcessor.from_pretrained(folder)
    assert processor.format == "coco_panoptic"  # as transformers' panoptic processors
    with torch.device("meta"):
        model = AutoModelForImageSegmentation.from_config(config)
    assert type(model) is HfDetrForSegmentation
    # the original DETRsegm's head: 8 attention maps, FPN over ResNet layer3, layer2, layer1
    adapters = [stage.adapter.in_channels for stage in model.mask_head.fpn_stages]
    assert adapters == [1024, 512, 256] and model.mask_head.conv1.conv.in_channels == 256 + 8
    card = ModelCard.load(folder / "README.md")
    assert card.data.pipeline_tag == "image-segmentation"
    assert [(r.metric_name, r.metric_value) for r in card.data.eval_results] == [("PQ", coco_pq)]
    assert f"**{coco_pq} PQ**" in card.text and "post_process_panoptic_segmentation" in card.text


class FakeHub:
    """Hub repositories in memory behind the network calls of `push_to_hub`: `HfApi.create_repo`,
    `HfApi.create_commit` (transformers' `push_to_hub`), `HfApi.upload_folder` (hf_detr's) and the download of an
    existing model card."""

    def __init__(self, download_dir: Path) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.commits: list[tuple[str, dict[str, bytes]]] = []
        self.download_dir = download_dir

    def create_repo(self, api: HfApi, repo_id: str, **kwargs) -> RepoUrl:
        self.repos.setdefault(repo_id, {})
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_commit(self, api: HfApi, repo_id: str, operations, commit_message: str, **kwargs) -> CommitInfo:
        files = {}
        for operation in operations:
            with operation.as_file() as f:
                files[operation.path_in_repo] = f.read()
        return self._commit(repo_id, files, commit_message)

    def _commit(self, repo_id: str, files: dict[str, bytes], commit_message: str) -> CommitInfo:
        if repo_id not in self.repos:
            raise AssertionError(f"{repo_id} was not created first")
        self.repos[repo_id].update(files)
        self.commits.append((repo_id, files))
        oid = f"{len(self.commits):040x}"
        return CommitInfo(f"https://huggingface.co/{repo_id}/commit/{oid}", commit_message, "", oid)

    def upload_folder(
        self, api: HfApi, folder_path, repo_id: str, commit_message: str | None = None, **kwargs
    ) -> CommitInfo:
        files = {
            str(path.relative_to(folder_path)): path.read_bytes()
            for path in sorted(Path(folder_path).rglob("*"))
            if path.is_file()
        }
        return self._commit(repo_id, files, commit_message or "Upload folder")

    def hf_hub_download(self, repo_id: str, filename: str, **kwargs) -> str:
        if filename not in self.repos.get(repo_id, {}):
            raise LocalEntryNotFoundError(f"{repo_id} has no {filename}")
        path = self.download_dir / repo_id / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.repos[repo_id][filename])
        return str(path)


@pytest.fixture
def fake_hub(tmp_path, monkeypatch) -> FakeHub:
    hub = FakeHub(tmp_path / "downloads")
    monkeypatch.setattr(HfApi, "create_repo", lambda api, repo_id, **kw: hub.create_repo(api, repo_id, **kw))
    monkeypatch.setattr(HfApi, "create_commit", lambda api, repo_id, **kw: hub.create_commit(api, repo_id, **kw))
    monkeypatch.setattr(HfApi, "upload_folder", lambda api, **kw: hub.upload_folder(api, **kw))
    monkeypatch.setattr("huggingface_hub.repocard.hf_hub_download", hub.hf_hub_download)
    return hub


def _relative_imports(source: bytes) -> set[str]:
    return set(re.findall(rb"^\s*from\s+\.(\w+)\s+import", source, flags=re.MULTILINE))


def test_push_to_hub_commits_what_trust_remote_code_needs(tmp_path, fake_hub):
    model = HfDetrForObjectDetection(HfDetrConfig(**tiny_config_kwargs())).eval()
    randomize_weights(model)
    processor = HfDetrImageProcessor(size={"shortest_edge": 64, "longest_edge": 96})  # small images: a fast test
    push_to_hub(model, "someone/detr-tiny", processor)

    ((repo_id, files),) = fake_hub.commits  # one commit: model, code, image processor and card together
    assert repo_id == "someone/detr-tiny"
    weights = load_safetensors(files["model.safetensors"])
    state_dict = model.state_dict()
    assert weights.keys() == state_dict.keys()
    assert all(torch.equal(weights[k], v) for k, v in state_dict.items())
    config = json.loads(files["config.json"])
    assert config["model_type"] == "hf_detr"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_hf_detr.HfDetrConfig",
        "AutoModelForObjectDetection": "modeling_hf_detr.HfDetrForObjectDetection",
    }
    preprocessor = json.loads(files["preprocessor_config.json"])
    assert preprocessor["auto_map"] == {"AutoImageProcessor": "image_processing_hf_detr.HfDetrImageProcessor"}
    assert preprocessor["size"] == {"shortest_edge": 64, "longest_edge": 96}
    # a repository without a card gets hf_detr's, not transformers' generic template
    card = ModelCard(files["README.md"].decode())
    assert (card.data.library_name, card.data.pipeline_tag) == ("transformers", "object-detection")
    assert "hf_detr" in card.data.tags
    assert 'from_pretrained("someone/detr-tiny", trust_remote_code=True)' in card.text
    assert "2: triangle" in card.text  # the labels

    repo = fake_hub.repos["someone/detr-tiny"]
    assert repo == files
    code = {name for name in repo if name.endswith(".py")}
    assert {"modeling_hf_detr.py", "configuration_hf_detr.py", "image_processing_hf_detr.py"} <= code
    for name in code:  # every module the remote code imports was uploaded
        assert {f"{m.decode()}.py" for m in _relative_imports(repo[name])} <= code, name

    folder = tmp_path / "repo"
    folder.mkdir()
    for name, content in repo.items():
        (folder / name).write_bytes(content)
    _check_remote_code_load(tmp_path, folder, model, processor)


def _check_remote_code_load(tmp_path: Path, folder: Path, model, processor) -> None:
    """Load `folder` with trust_remote_code in a process that cannot import hf_detr; outputs must equal ours."""
    image = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    image.save(tmp_path / "image.png")
    inputs = processor(images=image, return_tensors="pt")
    with torch.no_grad():
        torch.save({"inputs": dict(inputs), "logits": model(**inputs).logits}, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["hf_detr"] = None  # importing hf_detr now raises ImportError
        sys.path = [p for p in sys.path if not p.startswith({str(SRC)!r})]
        import PIL.Image, torch
        from transformers import AutoImageProcessor, AutoModelForObjectDetection, pipeline
        torch.set_num_threads({torch.get_num_threads()})  # bit-equal logits need the same summation order
        folder = {str(folder)!r}
        processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
        model = AutoModelForObjectDetection.from_pretrained(folder, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        assert type(processor).__module__.startswith("transformers_modules"), type(processor).__module__
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        image = PIL.Image.open({str(tmp_path / "image.png")!r})
        inputs = processor(images=image, return_tensors="pt")
        assert inputs.keys() == expected["inputs"].keys(), inputs.keys()
        assert all(torch.equal(inputs[k], v) for k, v in expected["inputs"].items())
        with torch.no_grad():
            assert torch.equal(model(**inputs).logits, expected["logits"])
        detections = pipeline("object-detection", model=folder, trust_remote_code=True)(image, threshold=0.0)
        assert len(detections) > 0 and {{d["label"] for d in detections}} <= set(model.config.id2label.values())
        print("REMOTE_OK")
        """
    )
    env = {"HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert "REMOTE_OK" in result.stdout, result.stderr[-3000:]


MY_CARD = b"---\nlicense: mit\ntags:\n- mine\n---\n\n# My own card\n"


def test_transformers_push_to_hub_keeps_the_repository_card(fake_hub):
    """The model's `push_to_hub` is transformers' own: it keeps the repository's card and adds the tags."""
    fake_hub.repos["someone/detr-tiny"] = {"README.md": MY_CARD}
    model = HfDetrForObjectDetection(HfDetrConfig(**tiny_config_kwargs()))
    model.push_to_hub("someone/detr-tiny", tags=["fine-tuned"])
    ((_, files),) = fake_hub.commits
    card = ModelCard(files["README.md"].decode())
    assert "# My own card" in card.text
    assert card.data.license == "mit"
    assert card.data.tags == ["mine", "fine-tuned"]
    assert "model.safetensors" in files


def test_hf_detr_push_to_hub_keeps_the_repository_card_or_uploads_the_given_one(fake_hub):
    fake_hub.repos["someone/detr-tiny"] = {"README.md": MY_CARD}
    model = HfDetrForObjectDetection(HfDetrConfig(**tiny_config_kwargs()))
    processor = HfDetrImageProcessor()
    push_to_hub(model, "someone/detr-tiny", processor, tags=["fine-tuned"])
    ((_, files),) = fake_hub.commits
    card = ModelCard(files["README.md"].decode())
    assert "# My own card" in card.text and card.data.license == "mit"
    assert card.data.tags == ["mine", "fine-tuned"]
    assert {"model.safetensors", "config.json", "preprocessor_config.json"} <= set(files)

    given = ModelCard("---\nlicense: apache-2.0\n---\n\n# The card of this upload\n")
    push_to_hub(model, "someone/detr-tiny", processor, card=given)
    _, files = fake_hub.commits[-1]
    assert ModelCard(files["README.md"].decode()).text == given.text
