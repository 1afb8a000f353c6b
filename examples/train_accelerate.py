"""Train or fine-tune hf_detr with accelerate: a starting point to copy and adapt.

The options are those of `hf-detr train --help` (the fields of `hf_detr.training.TrainConfig`). Run it on one device,

    python examples/train_accelerate.py --output_dir runs/shapes --dataset synthetic --image_size 128 \
        --model_kwargs '{"backbone": "resnet18", "d_model": 128, "encoder_layers": 3, "decoder_layers": 3}' \
        --num_train_epochs 50

or on several GPUs / machines by putting `accelerate launch --multi_gpu --num_processes 8` in front of `python`'s
place (see the README). To train on data you build yourself, pass a `datasets.DatasetDict` in the Hub's COCO
detection schema to `train(config, dataset=...)`; to change the model beyond `HfDetrConfig` options, build it and
pass `model=...`.
"""

from __future__ import annotations

import json

from accelerate import PartialState

from hf_detr.training import add_arguments, config_from_args, train
from hf_detr.training.options import OptionsParser


def main() -> None:
    parser = OptionsParser(description=__doc__)
    config = config_from_args(add_arguments(parser).parse_args())
    result = train(config)
    if PartialState().is_main_process:
        print(f"stopped after {result.global_step} steps ({result.stop_reason}); model in {result.output_dir}")
        print(json.dumps(result.metrics, indent=1))


if __name__ == "__main__":
    main()
