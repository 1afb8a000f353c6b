"""The `hf-detr` command line.

Each subcommand is one `add_<name>(subparsers)` function listed in `SUBCOMMANDS`: it adds its parser and sets `run` to
a callable taking the parsed arguments. A subcommand imports what it runs only when it runs, so that building the
parser (`hf-detr predict --help`, `hf-detr predict ...`) does not import the training, data or evaluation modules.
Bad input (`HfDetrInputError`) ends the command with its message and exit status 1; any other exception is a bug
and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..modeling.errors import HfDetrInputError
from ..training.options import OptionsParser, box_options, from_namespace
from . import options as command_options

Subparsers = argparse._SubParsersAction


def _add_parser(subparsers: Subparsers, name: str, dtype: type, **kwargs: Any) -> OptionsParser:
    """The subcommand's parser, its options those of the dataclass `dtype` (`training.options.add_options`)."""
    parser = subparsers.add_parser(name, **kwargs)
    parser.add_dataclass(dtype)
    return parser


def add_convert(subparsers: Subparsers) -> None:
    parser = _add_parser(
        subparsers,
        "convert",
        command_options.ConvertOptions,
        help="convert a DETR checkpoint of another implementation to an hf_detr folder",
        description="Convert a checkpoint of the original facebookresearch/detr code (.pth) or of transformers' "
        "DetrForObjectDetection (a save_pretrained folder or Hub id) into a folder that "
        "HfDetrForObjectDetection.from_pretrained / AutoModelForObjectDetection / pipeline('object-detection') load: "
        "model.safetensors, config.json, preprocessor_config.json (a transformers checkpoint's own preprocessing "
        "settings), the code for trust_remote_code and a README.md. hf_detr.create_model and hf-detr train / predict "
        "/ evaluate / export / app also take a transformers DETR folder or Hub id without this step.",
    )

    def run(args: argparse.Namespace) -> None:
        from ..builder import create_image_processor
        from ..hub.cards import model_card, save_model_folder
        from ..hub.convert import from_original, from_transformers
        from ..modeling import HfDetrImageProcessor

        if args.source_format == "original":
            model = from_original(args.source, backbone=args.backbone, dilation=args.dilation)
            processor = HfDetrImageProcessor()
        else:
            model = from_transformers(args.source)
            processor = create_image_processor(args.source)  # the checkpoint's preprocessing settings
        source = f"Weights converted from the {args.source_format} DETR checkpoint `{Path(str(args.source)).name}`."
        card = model_card(model.config, str(args.output_dir), source=source)
        save_model_folder(args.output_dir, model, processor, card)
        print(f"wrote {args.output_dir}")

    parser.set_defaults(run=run)


def add_predict(subparsers: Subparsers) -> None:
    parser = _add_parser(
        subparsers,
        "predict",
        command_options.PredictOptions,
        help="detect objects (and their masks) in images, folders of images and videos with a saved model folder",
        description="Print the detections of each image and video frame as JSON (label, score, box in pixels; "
        "--format coco: COCO results with an images list); with --out, also write each image with its boxes drawn "
        "as <out>/<name>.png, each video annotated as <out>/<stem>.mp4, and <out>/results.json (COCO results) with "
        "<out>/images.json (image ids to file names, categories). --tile cuts large images into overlapping tiles "
        "and merges the tiles' detections, for objects too small at the model's input size. A segmentation model "
        "(HfDetrForSegmentation, or transformers' DetrForSegmentation) also gives each detection's mask: a COCO RLE "
        'in the JSON ("mask"; "segmentation" in the COCO results) and laid over the pictures.',
    )

    def run(args: argparse.Namespace) -> None:
        import json

        from .predict import VIDEO_EXTENSIONS, coco_results, detection_records, load_model, predict, require_av

        if any(Path(path).suffix.lower() in VIDEO_EXTENSIONS for path in args.paths):
            try:  # the install hint before the model loads
                require_av()
            except ImportError as error:
                raise HfDetrInputError(str(error)) from None
        model, processor = load_model(args.model, args.task)
        detections = predict(
            model,
            processor,
            args.paths,
            args.threshold,
            args.out,
            batch_size=args.per_device_eval_batch_size,
            tile=args.tile,
            overlap=args.overlap,
            tile_iou=args.tile_iou,
            progress=False if args.disable_tqdm else None,
            nms_threshold=args.nms_threshold,
        )
        id2label = model.config.id2label
        coco = args.format == "coco"
        output = coco_results(detections, id2label) if coco else detection_records(detections, id2label)
        print(json.dumps(output, indent=2))

    parser.set_defaults(run=run)


def add_train(subparsers: Subparsers) -> None:
    from ..training.config import add_arguments

    parser = _add_parser(
        subparsers,
        "train",
        command_options.TrainCommandOptions,
        help="train or fine-tune a DETR (one device; `accelerate launch -m hf_detr train` for several)",
        description="Train on the synthetic shapes set or a Hub-COCO data set (Hub id, save_to_disk or COCO folder), "
        "evaluate COCO mAP, save resumable states and the final model folder. Same options as "
        "`accelerate launch -m hf_detr train`, which runs on several processes or machines (see the README).",
    )
    add_arguments(parser)

    def run(args: argparse.Namespace) -> None:
        from accelerate import PartialState

        from ..training.config import config_from_args
        from ..training.loop import train

        result = train(config_from_args(args))
        if PartialState().is_main_process:
            print(f"step {result.global_step} ({result.stop_reason}): model saved to {result.output_dir}")
            if result.eval_dataset is not None and args.diagnostics:
                _training_diagnostics(result)

    parser.set_defaults(run=run)


def _training_diagnostics(result: Any) -> None:
    """The end of `hf-detr train`: `hf-detr evaluate --out`'s diagnostics of the trained model on the evaluation
    split, in OUTPUT_DIR/diagnostics (skipped, with the install hint, without matplotlib)."""
    from .visualize import require_matplotlib, save_diagnostics

    try:
        require_matplotlib()
    except ImportError as error:
        print(f"no diagnostics pictures: {error}")
        return
    from ..evaluation.evaluate import evaluate

    out = Path(result.output_dir) / "diagnostics"
    evaluation = evaluate(
        result.model, result.image_processor, result.eval_dataset, per_class=True, return_evaluation=True
    )
    diagnostics = save_diagnostics(evaluation, result.eval_dataset, out)
    worst = ", ".join(f"{image.index} ({image.errors})" for image in diagnostics.worst(8))
    print(
        f"diagnostics in {out}: confusion matrix, per-class precision-recall, worst images (errors): {worst}; "
        f"{_count_duplicates(diagnostics)}"
    )


# What each COCO number means, for the `evaluate` table.
_COCO_ROWS: tuple[tuple[str, str], ...] = (
    ("map", "AP   IoU=0.50:0.95  area=all     maxDets=100"),
    ("map_50", "AP   IoU=0.50       area=all     maxDets=100"),
    ("map_75", "AP   IoU=0.75       area=all     maxDets=100"),
    ("map_small", "AP   IoU=0.50:0.95  area=small   maxDets=100"),
    ("map_medium", "AP   IoU=0.50:0.95  area=medium  maxDets=100"),
    ("map_large", "AP   IoU=0.50:0.95  area=large   maxDets=100"),
    ("mar_1", "AR   IoU=0.50:0.95  area=all     maxDets=1"),
    ("mar_10", "AR   IoU=0.50:0.95  area=all     maxDets=10"),
    ("mar_100", "AR   IoU=0.50:0.95  area=all     maxDets=100"),
    ("mar_small", "AR   IoU=0.50:0.95  area=small   maxDets=100"),
    ("mar_medium", "AR   IoU=0.50:0.95  area=medium  maxDets=100"),
    ("mar_large", "AR   IoU=0.50:0.95  area=large   maxDets=100"),
)
_PANOPTIC_ROWS = (
    ("pq", "panoptic quality (SQ x RQ)"),
    ("sq", "segmentation quality: mean IoU of matched segments"),
    ("rq", "recognition quality: F1 of segments matched at IoU > 0.5"),
)
# hf_detr.evaluation.duplicates: DETR should give one confident box per object
_DUPLICATE_ROWS = (
    ("duplicate_rate", "share of detections >= 0.5 overlapping a better one of the same label, IoU >= 0.7"),
    ("duplicated_objects", "share of ground-truth objects with more than one such detection"),
)


def _evaluate_model_folder(options: command_options.EvaluateOptions) -> tuple[Any, Any]:
    """The `CocoEvaluation` (`hf_detr.evaluation.evaluate(..., return_evaluation=True)`: metrics, per-class table,
    PR arrays, per-image detections) of the model saved in `options.model` with its image processor on the split of
    the data set, and that split (the images the evaluation's entries refer to, in order). A segmentation model's
    split is loaded with its masks, which are scored too (mask mAP, panoptic quality)."""
    import torch

    from ..data.sources import load_data
    from ..evaluation.evaluate import evaluate
    from .predict import load_model

    batch_size = options.per_device_eval_batch_size
    if batch_size < 1:  # named as the user typed it, before anything is loaded
        raise HfDetrInputError(f"--per_device_eval_batch_size must be at least 1, got {batch_size}")
    model, processor = load_model(options.model, options.task)
    model.to(torch.device(options.device or ("cuda" if torch.cuda.is_available() else "cpu")))
    data = load_data(options.dataset, [options.split], masks=model.config.predicts_masks, **box_options(options))[
        options.split
    ]
    if len(data) == 0:
        raise HfDetrInputError(f"split {options.split!r} of {options.dataset} has no images.")
    evaluation = evaluate(
        model,
        processor,
        data,
        batch_size=batch_size,
        per_class=options.per_class,
        threshold=options.threshold,
        return_evaluation=True,
        backend=options.coco_backend,
        nms_threshold=options.nms_threshold,
    )
    return evaluation, data


def _format_coco_table(metrics: dict[str, float], per_class: Mapping[str, Mapping[str, float]] | None = None) -> str:
    """`metrics` of `evaluate` as a text table, one row per COCO number, then, given `per_class`
    (`CocoEvaluation.per_class`), AP, AP50, AR@100 and the ground-truth objects of each class."""
    from ..evaluation.metrics import format_per_class_table

    lines = [f"{'metric':<18}{'value':>8}   meaning"]
    lines += [f"{name:<18}{metrics[name]:>8.4f}   {meaning}" for name, meaning in _COCO_ROWS]
    if "segm_map" in metrics:  # a segmentation model's masks: the same COCO rows at mask IoU, and panoptic quality
        lines += [
            f"{'segm_' + name:<18}{metrics['segm_' + name]:>8.4f}   mask {meaning}" for name, meaning in _COCO_ROWS
        ]
        lines += [f"{name:<18}{metrics[name]:>8.4f}   {meaning}" for name, meaning in _PANOPTIC_ROWS]
    lines += [f"{name:<18}{metrics[name]:>8.4f}   {meaning}" for name, meaning in _DUPLICATE_ROWS if name in metrics]
    undefined = any(value == -1.0 for value in metrics.values())
    if per_class:
        lines += ["", format_per_class_table(per_class)]
        undefined = undefined or any(row["map"] == -1.0 for row in per_class.values())
    if undefined:
        lines.append("-1: no ground-truth object in that area range or class, so COCO leaves the value undefined.")
    return "\n".join(lines)


def _share(value: float) -> str:
    """A share as a percentage; -1 (nothing to count) as such."""
    return "undefined (nothing to count)" if value == -1.0 else f"{value:.1%}"


def _count_duplicates(diagnostics: Any) -> str:
    """How many of the diagnostics' false positives repeat a better detection of their class (drawn purple)."""
    false_positives = sum(len(image.false_positives) for image in diagnostics.images)
    return f"{diagnostics.duplicates} of {false_positives} false positives are duplicates"


def _require_viz() -> None:
    """Stop with the install hint before any work when the pictures' matplotlib is missing."""
    from .visualize import require_matplotlib

    try:
        require_matplotlib()
    except ImportError as error:
        raise HfDetrInputError(str(error)) from None


def add_evaluate(subparsers: Subparsers) -> None:
    parser = _add_parser(
        subparsers,
        "evaluate",
        command_options.EvaluateOptions,
        help="print the COCO box mAP table of a saved model folder on a data set (and a segmentation model's mask "
        "mAP and panoptic quality)",
        description="Score a model folder (weights, config and preprocessor_config.json, e.g. the output_dir of "
        "examples/run_object_detection.py) with pycocotools on one split of a detection data set: AP at IoU "
        "0.50:0.95 / 0.50 / 0.75, AP of small / medium / large objects and AR at 1 / 10 / 100 detections.",
    )

    def run(args: argparse.Namespace) -> None:
        if args.out is not None:
            _require_viz()
            # checked before the model runs
            if not 0.0 < args.iou_threshold <= 1.0:
                raise HfDetrInputError(f"--iou_threshold must be in (0, 1], got {args.iou_threshold}")
            if not 0.0 <= args.score_threshold <= 1.0:
                raise HfDetrInputError(f"--score_threshold must be in [0, 1], got {args.score_threshold}")
            if args.worst < 1:
                raise HfDetrInputError(f"--worst must be at least 1, got {args.worst}")
        evaluation, data = _evaluate_model_folder(from_namespace(command_options.EvaluateOptions, args))
        print(f"{args.model} on {args.dataset} [{args.split}], threshold {args.threshold}")
        print(_format_coco_table(evaluation.metrics, evaluation.per_class if args.per_class else None))
        if args.out is not None:
            import json

            from .visualize import save_diagnostics, save_pr_curve

            args.out.mkdir(parents=True, exist_ok=True)
            # the same layout as the demo's metrics.json
            metrics = {**evaluation.metrics, "per_class": evaluation.per_class}
            (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
            save_pr_curve(evaluation, args.out / "pr_curve.png")
            diagnostics = save_diagnostics(
                evaluation,
                data,
                args.out,
                iou_threshold=args.iou_threshold,
                score_threshold=args.score_threshold,
                worst=args.worst,
            )
            worst = ", ".join(f"{image.index} ({image.errors})" for image in diagnostics.worst(args.worst))
            print(
                f"worst images (errors) at IoU >= {args.iou_threshold:g}, score >= {args.score_threshold:g}: {worst}; "
                f"{_count_duplicates(diagnostics)}"
            )
            written = (
                "metrics.json",
                "pr_curve.png",
                "pr_curves_per_class.png",
                "confusion_matrix.json",
                "confusion_matrix.png",
                "worst_images.png",
            )
            print(f"wrote {', '.join(written)} to {args.out}")

    parser.set_defaults(run=run)


def add_demo(subparsers: Subparsers) -> None:
    parser = _add_parser(
        subparsers,
        "demo",
        command_options.DemoOptions,
        help="train and evaluate a small DETR on generated shapes (no download), with pictures",
        description="Generate the synthetic shapes data set, train a small DETR on the CPU within a time budget, "
        "evaluate COCO mAP on its test split and write to OUTPUT_DIR: model/ (loadable by pipeline), metrics.json "
        "(with a per-class table, also printed), curves.png (training loss, validation mAP), predictions.png (ground "
        "truth next to predictions) and pr_curve.png (precision-recall). The pictures need matplotlib: "
        "pip install 'hf_detr[viz]' (make demo installs it).",
    )

    def run(args: argparse.Namespace) -> None:
        _require_viz()
        from ..evaluation.metrics import format_per_class_table
        from .demo import run_demo

        metrics = run_demo(
            args.output_dir,
            time_budget=args.time_budget,
            seed=args.seed,
            dataset=args.dataset,
            task=args.task,
            load_options=box_options(args),
        )
        print(format_per_class_table(metrics["per_class"]))
        print(
            f"test split: AP {metrics['map']:.3f}  AP50 {metrics['map_50']:.3f}  AP75 {metrics['map_75']:.3f}  "
            f"({metrics['steps']} steps, {metrics['total_seconds']:.0f} s in all); wrote {args.output_dir}"
        )
        nms = metrics["with_nms"]
        print(
            f"duplicates: {_share(metrics['duplicate_rate'])} of confident detections, "
            f"{_share(metrics['duplicated_objects'])} of objects with more than one box; with NMS at IoU 0.7 "
            f"(a fallback DETR should not need): AP {nms['map']:.3f}, duplicates {_share(nms['duplicate_rate'])}"
        )
        if "segm_map" in metrics:
            print(
                f"masks: AP {metrics['segm_map']:.3f}  AP50 {metrics['segm_map_50']:.3f}  AP75 "
                f"{metrics['segm_map_75']:.3f}; panoptic: PQ {metrics['pq']:.3f}  SQ {metrics['sq']:.3f}  RQ "
                f"{metrics['rq']:.3f}"
            )

    parser.set_defaults(run=run)


def add_check_data(subparsers: Subparsers) -> None:
    parser = _add_parser(
        subparsers,
        "check-data",
        command_options.CheckDataOptions,
        help="count a data set's images and boxes per class and list every problem the loader would fix or stop at",
        description="Read a detection data set as hf-detr train / evaluate would (COCO, YOLO or Pascal VOC folder, "
        "save_to_disk folder, Hub id or 'synthetic') and print, per split, the images and boxes of each class, box "
        "width / height / area in pixels and boxes per image (min / median / max) of the data as loaded, then every "
        "problem, one line each: warnings for the boxes the box policy clips or drops, errors for missing or "
        "unreadable images, images of another size than annotated, and (with --box_policy error) the boxes the "
        "other policies would change. Exit status 1 when there are errors, 0 otherwise (warnings included).",
    )

    def run(args: argparse.Namespace) -> None:
        from ..data.check import check_data

        report = check_data(args.dataset, args.split, box_policy=args.box_policy, box_tolerance=args.box_tolerance)
        print(report.format())
        if report.errors:
            raise HfDetrInputError(f"{len(report.errors)} error(s) in {args.dataset}, listed above.")

    parser.set_defaults(run=run)


def add_app(subparsers: Subparsers) -> None:
    parser = _add_parser(
        subparsers,
        "app",
        command_options.AppOptions,
        help="serve a Gradio page for a model: upload an image or a short video, see its detections",
        description="Serve a web page (Gradio; pip install 'hf_detr[app]') for a model folder or Hub id: an image "
        "tab (upload an image or pick one of --dataset's, a score slider, the picture with its boxes and masks, the "
        "detections as a table and as JSON) and a video tab for short clips (the annotated video and the detections "
        "per frame; PyAV, pip install 'hf_detr[video]'). The same page runs in a Space written by "
        "hf_detr.hub.push_to_hub(..., space=True). Runs until interrupted.",
    )

    def run(args: argparse.Namespace) -> None:
        from .app import create_app

        if args.examples < 1:
            raise HfDetrInputError(f"--examples must be at least 1, got {args.examples}")
        try:
            page = create_app(
                args.model,
                args.dataset,
                args.split,
                args.examples,
                args.threshold,
                args.max_video_frames,
                args.task,
                load_options=box_options(args),
            )
        except ImportError as error:  # gradio missing: the install hint, not a traceback
            raise HfDetrInputError(str(error)) from None
        page.launch(server_name=args.host, server_port=args.port, show_error=True)

    parser.set_defaults(run=run)


def add_export(subparsers: Subparsers) -> None:
    parser = _add_parser(
        subparsers,
        "export",
        command_options.ExportOptions,
        help="export a model folder to ONNX (raw or end-to-end, float32 or float16) and validate the graph",
        description="Export MODEL (a folder or Hub id with its image processor, detection or segmentation) to "
        "OUT_DIR: model.onnx ((pixel_values, pixel_mask) -> (logits, pred_boxes[, pred_masks])), with --end_to_end "
        "also model_end_to_end.onnx (uint8 images and their sizes -> scores, labels, boxes in pixels[, masks]: the "
        "image processor's preprocessing and the post-processing inside the graph), config.json, "
        "preprocessor_config.json, README.md (inputs, outputs, how to run with onnxruntime) and validation.json: the "
        "graphs under onnxruntime against the PyTorch model on a batch of images of mixed sizes and, with --dataset, "
        "COCO mAP on a split. Exit status 1 when a graph's mAP differs from the model's by more than 0.002 (fp32) or "
        "0.01 (fp16), or a float32 graph's outputs differ from the model's (logits or boxes by more than 1e-3, "
        "end-to-end boxes by more than 0.5 pixel). `hf-detr export --validate OUT_DIR --dataset PATH` validates an "
        "existing export against the model it was exported from (or MODEL).",
    )

    def run(args: argparse.Namespace) -> None:
        import json

        from ..hub.export import export_folder
        from ..hub.validate import check_recorded_options, load_validation_split, validate_export
        from .predict import load_model

        batch_size = args.per_device_eval_batch_size
        if batch_size < 1:
            raise HfDetrInputError(f"--per_device_eval_batch_size must be at least 1, got {batch_size}")
        if args.validate is not None:
            if args.out_dir is not None:
                raise HfDetrInputError("--validate takes the export folder; give only MODEL (optional) besides it")
            check_recorded_options(args.validate, args.dtype, args.end_to_end, args.max_detections)
            out_dir, source = args.validate, args.model or _recorded_source(args.validate)
        elif args.model is None or args.out_dir is None:
            raise HfDetrInputError("give MODEL and OUT_DIR (hf-detr export MODEL OUT_DIR), or --validate OUT_DIR")
        else:
            out_dir, source = args.out_dir, args.model
        if args.max_detections is not None and args.max_detections < 1:
            raise HfDetrInputError(f"--max_detections must be at least 1, got {args.max_detections}")
        model, processor = load_model(source, args.task)
        data = load_validation_split(args.dataset, args.split, model, **box_options(args)) if args.dataset else None
        if args.validate is None:
            max_detections = args.max_detections or min(100, model.config.num_queries)
            export_folder(
                model,
                processor,
                out_dir,
                dtype=args.dtype or "fp32",
                end_to_end=args.end_to_end,
                max_detections=max_detections,
                source=str(source),
            )
        data_name = f"{args.dataset} [{args.split}]" if args.dataset else None
        report = validate_export(out_dir, model, processor, data, data_name=data_name, batch_size=batch_size)
        print(json.dumps(report, indent=2))
        if not report["passed"]:
            raise HfDetrInputError(
                f"validation of {out_dir} failed: {'; '.join(report['failures'])} (all numbers in "
                f"{out_dir / 'validation.json'})"
            )
        print(f"validated {out_dir}: numbers in {out_dir / 'validation.json'}")

    def _recorded_source(out_dir: Path) -> str:
        from ..hub.export import RAW_FILE, graph_metadata
        from ..hub.onnx_runtime import session

        source = graph_metadata(session(out_dir / RAW_FILE)).get("source")
        if source is None:
            raise HfDetrInputError(
                f"{out_dir / RAW_FILE} records no source model: give it, hf-detr export --validate {out_dir} MODEL"
            )
        return source

    parser.set_defaults(run=run)


SUBCOMMANDS: tuple[Callable[[Subparsers], None], ...] = (
    add_convert,
    add_predict,
    add_train,
    add_evaluate,
    add_demo,
    add_check_data,
    add_app,
    add_export,
)


def build_parser() -> OptionsParser:
    parser = OptionsParser(prog="hf-detr", description="DETR for the Hugging Face ecosystem.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `hf-detr` with `argv` (default: the process arguments); returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except HfDetrInputError as error:  # bad input: its message says what to change; anything else is a bug
        print(f"hf-detr {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
