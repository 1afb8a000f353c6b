"""Another number of object queries than the checkpoint's (issue #15): `hf_detr.create_model(..., num_queries=N)` and
`hf-detr train --model_kwargs '{"num_queries": N}'` load every weight exactly and resize only `query_embed`
(`resize_queries`), for hf_detr folders (single file or sharded) and transformers' own DETR checkpoints."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForObjectDetection, DetrConfig, DetrForObjectDetection

from helpers import padded_batch, randomize_weights, tiny_config_kwargs
from hf_detr import HfDetrConfig, HfDetrForObjectDetection, HfDetrModel, create_model
from hf_detr.apps.cli import main as cli_main
from hf_detr.data.synthetic import ID2LABEL
from hf_detr.hub.convert import state_dict_from_transformers

pytestmark = pytest.mark.usefixtures("one_thread")

LOGGER = "hf_detr.modeling.modeling_hf_detr"
QUERIES = 10  # the tiny preset's
EMBED = "model.query_embed.weight"


def _save(model: torch.nn.Module, folder: Path, sharded: bool = False) -> dict[str, torch.Tensor]:
    model.save_pretrained(folder, max_shard_size="1MB" if sharded else "5GB")
    assert (folder / "model.safetensors.index.json").is_file() == sharded
    return {key: value.clone() for key, value in model.state_dict().items()}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """The tiny preset with the synthetic shapes' labels and random weights of a sensible scale, saved."""
    torch.manual_seed(0)
    model = HfDetrForObjectDetection(HfDetrConfig(**tiny_config_kwargs(id2label=ID2LABEL))).eval()
    randomize_weights(model)
    folder = tmp_path_factory.mktemp("tiny")
    return folder, _save(model, folder)


def _outputs(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    pixel_values, pixel_mask = padded_batch(((64, 64), (48, 64)), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model.eval()(pixel_values=pixel_values, pixel_mask=pixel_mask)
    return out.logits, out.pred_boxes


def _messages(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == LOGGER]


def _assert_only_queries_changed(state: dict[str, torch.Tensor], saved: dict[str, torch.Tensor]) -> None:
    assert state.keys() == saved.keys()
    for key, value in state.items():
        if key != EMBED:
            assert torch.equal(value, saved[key]), key


def _assert_new_queries_near_existing(new: torch.Tensor, existing: torch.Tensor) -> torch.Tensor:
    """New embeddings `[n, d]` distinct from each other and from `existing` `[Q, d]`, each within the noise (0.1 of
    the embeddings' std per entry) of one existing embedding; returns the index of that nearest one."""
    scale = existing.std() * existing.shape[1] ** 0.5  # the size of a difference of std 1 per entry
    distances = torch.cdist(new, existing)
    nearest = distances.min(dim=1)
    assert (nearest.values > 0.02 * scale).all()  # not an exact copy
    assert (nearest.values < 0.2 * scale).all()  # near one (noise: about 0.1 * scale)
    assert (torch.cdist(existing, existing) + 10 * torch.eye(len(existing)) * scale).min() > 0.5 * scale  # far apart
    pairwise = torch.cdist(new, new) + 10 * torch.eye(len(new)) * scale
    assert pairwise.min() > 0.02 * scale  # the new ones differ from each other
    return nearest.indices


@pytest.mark.parametrize("sharded", [False, True], ids=["single_file", "sharded"])
def test_fewer_queries_keep_the_first_ones_and_every_other_weight(checkpoint, tmp_path, sharded, caplog):
    folder, saved = checkpoint
    if sharded:
        model = HfDetrForObjectDetection.from_pretrained(folder)
        _save(model, tmp_path, sharded=True)
        folder = tmp_path
    with caplog.at_level(logging.INFO, logger=LOGGER):
        model = create_model(folder, num_queries=4)  # a weight that did not load would be an error
    assert _messages(caplog) == ["query_embed: 10 -> 4 queries (kept the first 4)"]
    state = model.state_dict()
    assert torch.equal(state[EMBED], saved[EMBED][:4])
    _assert_only_queries_changed(state, saved)
    assert model.config.num_queries == 4 and model.model.query_embed.num_embeddings == 4
    logits, boxes = _outputs(model)
    assert logits.shape == (2, 4, len(ID2LABEL) + 1) and boxes.shape == (2, 4, 4)


def test_more_queries_keep_all_and_add_new_ones_made_from_existing_ones(checkpoint, caplog):
    folder, saved = checkpoint
    with caplog.at_level(logging.INFO, logger=LOGGER):
        model = create_model(folder, num_queries=25)
    assert _messages(caplog) == ["query_embed: 10 -> 25 queries (15 new ones from existing ones plus noise)"]
    state = model.state_dict()
    assert state[EMBED].shape == (25, 64) and model.config.num_queries == 25
    assert torch.equal(state[EMBED][:QUERIES], saved[EMBED])
    _assert_only_queries_changed(state, saved)
    sources = _assert_new_queries_near_existing(state[EMBED][QUERIES:], saved[EMBED])
    # every existing query is copied once before any is copied twice: the first 10 new ones have 10 sources
    assert sorted(sources[:QUERIES].tolist()) == list(range(QUERIES))
    assert _outputs(model)[0].shape == (2, 25, len(ID2LABEL) + 1)

    # reproducible, without the global RNG: the same load gives the same weights; another generator other ones
    again = create_model(folder, num_queries=25).state_dict()[EMBED]
    assert torch.equal(again, state[EMBED])
    plain = HfDetrForObjectDetection.from_pretrained(folder)
    rng = torch.get_rng_state()
    plain.resize_queries(25, generator=torch.Generator().manual_seed(1))
    assert torch.equal(torch.get_rng_state(), rng)
    other = plain.model.query_embed.weight.detach()
    assert torch.equal(other[:QUERIES], saved[EMBED]) and not torch.equal(other, state[EMBED])


def test_the_same_number_of_queries_loads_the_checkpoint_unchanged(checkpoint, caplog):
    folder, saved = checkpoint
    with caplog.at_level(logging.INFO, logger=LOGGER):
        model = create_model(folder, num_queries=QUERIES)
    assert _messages(caplog) == []
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[key]), key
    logits, boxes = _outputs(model)
    reference_logits, reference_boxes = _outputs(HfDetrForObjectDetection.from_pretrained(folder))
    assert torch.equal(logits, reference_logits) and torch.equal(boxes, reference_boxes)


def test_kept_queries_predict_exactly_as_before_with_one_decoder_layer(tmp_path):
    """The decoder starts from tgt = 0, and its first self-attention reads the values tgt: whatever the other queries,
    that attention returns the output projection's bias. With one decoder layer each query's prediction thus depends
    on its own embedding and the image only, so the kept queries predict what they predicted before. With two layers
    the second self-attention mixes the queries, and fewer queries change every output."""
    torch.manual_seed(0)
    model = HfDetrForObjectDetection(HfDetrConfig(**tiny_config_kwargs(decoder_layers=1))).eval()
    randomize_weights(model)
    model.save_pretrained(tmp_path)
    logits, boxes = _outputs(model)
    assert boxes.std() > 0.05 and logits.std() > 0.1  # predictions that differ from query to query
    for n in (4, 25):
        resized_logits, resized_boxes = _outputs(create_model(tmp_path, num_queries=n))
        kept = min(n, QUERIES)
        torch.testing.assert_close(resized_logits[:, :kept], logits[:, :kept], rtol=0, atol=1e-5)
        torch.testing.assert_close(resized_boxes[:, :kept], boxes[:, :kept], rtol=0, atol=1e-5)

    two_layers = HfDetrForObjectDetection(HfDetrConfig(**tiny_config_kwargs())).eval()
    randomize_weights(two_layers)
    two_layers.save_pretrained(tmp_path / "two")
    before = _outputs(two_layers)[0][:, :4]
    after = _outputs(create_model(tmp_path / "two", num_queries=4))[0]
    assert (after - before).abs().max() > 1e-3


def test_each_query_group_is_resized_alike(caplog):
    """`query_embed` holds `num_query_groups` groups of `num_queries` (training only): each keeps its first queries,
    or gets new ones made from its own; inference (the first group) then has the requested number."""
    model = HfDetrForObjectDetection(HfDetrConfig(**tiny_config_kwargs(num_query_groups=2, one_to_many_repeats=2)))
    old = model.model.query_embed.weight.detach().clone()  # [2 * 10, 64]
    model.resize_queries(3)
    assert torch.equal(model.model.query_embed.weight, torch.cat([old[:3], old[QUERIES : QUERIES + 3]]))

    model = HfDetrForObjectDetection(HfDetrConfig(**tiny_config_kwargs(num_query_groups=2, one_to_many_repeats=2)))
    model.model.query_embed.weight.data.copy_(old)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        model.resize_queries(13)
    assert _messages(caplog) == [
        "query_embed: 10 -> 13 queries (3 new ones from existing ones plus noise) in each of the 2 query groups"
    ]
    weight = model.model.query_embed.weight.detach()
    assert weight.shape == (26, 64) and model.config.num_queries == 13
    assert torch.equal(weight[:QUERIES], old[:QUERIES]) and torch.equal(weight[13:23], old[QUERIES:])
    # each group's new queries come from that group: nearest among all 20 old queries is one of its own
    first = _assert_new_queries_near_existing(weight[QUERIES:13], old)
    second = _assert_new_queries_near_existing(weight[23:], old)
    assert (first < QUERIES).all() and (second >= QUERIES).all()
    pixel_values, _ = padded_batch(((64, 64),))
    with torch.no_grad():
        assert model.train()(pixel_values).logits.shape[1] == 26  # training: both groups
    assert _outputs(model)[0].shape[1] == 13  # inference: the first group
    model.to_plain_detr()
    assert model.model.query_embed.weight.shape == (13, 64) and torch.equal(model.model.query_embed.weight, weight[:13])


def test_from_pretrained_is_transformers_own(checkpoint):
    """Only `create_model` resizes: `from_pretrained` and the Auto classes load the checkpoint as it is, and another
    number of queries there is transformers' own size mismatch error."""
    folder, saved = checkpoint
    auto = AutoModelForObjectDetection.from_pretrained(folder)
    assert type(auto) is HfDetrForObjectDetection and torch.equal(auto.model.query_embed.weight, saved[EMBED])
    base = HfDetrModel.from_pretrained(folder)
    assert torch.equal(base.query_embed.weight, saved[EMBED])
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        HfDetrForObjectDetection.from_pretrained(folder, num_queries=13)
    resized = create_model(folder, num_queries=6)
    assert torch.equal(resized.model.query_embed.weight, saved[EMBED][:6]) and resized.config.num_queries == 6


@pytest.mark.parametrize("value", [0, -3, 2.5, "20", True])
def test_an_invalid_number_of_queries_is_a_clear_error(checkpoint, value):
    folder, _ = checkpoint
    message = rf"num_queries={value!r} is invalid: it must be a positive integer"
    with pytest.raises(ValueError, match=message):
        create_model(folder, num_queries=value)
    with pytest.raises(ValueError, match=message):
        HfDetrForObjectDetection(HfDetrConfig(**tiny_config_kwargs())).resize_queries(value)


def test_a_transformers_detr_checkpoint_loads_with_another_number_of_queries(tmp_path, caplog):
    torch.manual_seed(0)
    reference = DetrForObjectDetection(
        DetrConfig(
            backbone="resnet18",
            encoder_layers=1,
            decoder_layers=2,
            d_model=64,
            encoder_ffn_dim=128,
            decoder_ffn_dim=128,
            num_queries=QUERIES,
            id2label=ID2LABEL,
        )
    )
    randomize_weights(reference)
    reference.save_pretrained(tmp_path, max_shard_size="10MB")  # sharded, the Hub's key names
    assert (tmp_path / "model.safetensors.index.json").is_file()
    converted = create_model(tmp_path).state_dict()
    assert torch.equal(converted[EMBED], state_dict_from_transformers(reference.state_dict())[EMBED])

    with caplog.at_level(logging.INFO, logger=LOGGER):
        fewer = create_model(tmp_path, num_queries=4)
    assert _messages(caplog) == ["query_embed: 10 -> 4 queries (kept the first 4)"]
    assert fewer.config.num_queries == 4 and torch.equal(fewer.state_dict()[EMBED], converted[EMBED][:4])
    _assert_only_queries_changed(fewer.state_dict(), converted)

    more = create_model(tmp_path, id2label=ID2LABEL, num_queries=14)  # as hf-detr train --model_kwargs does
    state = more.state_dict()
    assert more.config.num_queries == 14 and torch.equal(state[EMBED][:QUERIES], converted[EMBED])
    _assert_new_queries_near_existing(state[EMBED][QUERIES:], converted[EMBED])
    _assert_only_queries_changed(state, converted)


def test_hf_detr_train_fine_tunes_with_another_number_of_queries(checkpoint, tmp_path):
    folder, saved = checkpoint
    args = [
        "train",
        "--output_dir",
        str(tmp_path),
        "--model_name_or_path",
        str(folder),
        "--model_kwargs",
        json.dumps({"num_queries": 14}),
        "--dataset",
        "synthetic",
        "--synthetic_image_size",
        "64",
        "--image_size",
        "64",
        "--synthetic_train_size",
        "4",
        "--eval_split",
        "none",
        "--max_steps",
        "2",
        "--backbone_learning_rate",
        "0",
        "--learning_rate",
        "1e-3",
        "--per_device_train_batch_size",
        "2",
        "--cpu",
        "--disable_tqdm",
        "--report_to",
        "none",
        "--save_steps",
        "0",
    ]
    assert cli_main(args) == 0
    assert json.loads((tmp_path / "config.json").read_text())["num_queries"] == 14
    trained = load_file(tmp_path / "model.safetensors")
    assert trained[EMBED].shape == (14, 64)
    assert not torch.equal(trained[EMBED][:QUERIES], saved[EMBED])  # trained, from the checkpoint's
    backbone = [key for key in saved if key.startswith("model.backbone.")]
    assert backbone and all(torch.equal(trained[key], saved[key]) for key in backbone)  # frozen: started from it
    reloaded = HfDetrForObjectDetection.from_pretrained(tmp_path)
    assert reloaded.config.num_queries == 14 and _outputs(reloaded)[1].shape == (2, 14, 4)
