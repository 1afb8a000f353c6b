"""The scale benchmark (issue 22): loading, training start-up, streaming and evaluation as the data set grows, with a
linear extrapolation to COCO train2017 (118,287 images, 860,001 boxes) and val2017 (5,000 images).

Run from the repository root: `python -m benchmarks.bench_scale [--sizes 1000 5000 20000] [--out results.json]`
(`--quick` for tiny sizes). For each size N it writes a COCO folder and a Hub-schema `save_to_disk` data set with the
images embedded (`benchmarks/scale_data.py`: 640x480 JPEGs of ~150 KB, 7.27 polygon objects per image) and measures,
for both sources:

* load (`hf_detr.data.load_data(path)`, and with `masks=True`): time and peak RSS of a first load and of a second one
  with the first one's caches, and the bytes each writes;
* time to the first training step of `hf-detr train --max_steps 1` with a tiny model, on 1 process and on 2
  (`accelerate launch --multi_gpu --num_processes 2 -m hf_detr train ... --cpu`, as the tests launch it), loaded and
  streamed (`--streaming`), from the command's start to the step's line in `train_log.jsonl`, and the whole command's
  time and peak RSS per process;
* streaming: images per second read and decoded from `load_detection_dataset(path, streaming=True)` (at most
  `--stream_images`), and the time from the call to the first image.

Every measurement runs in a fresh process (`python -m benchmarks.bench_scale --child SPEC`), so its peak RSS (VmHWM
of the process or of the largest of its child processes; of the largest process of a training run) is its own, on a
copy of the source made of hard links, so that nothing a loader wrote before is there, with `HF_HOME`,
`HF_DATASETS_CACHE`, `HF_DETR_CACHE` and `XDG_CACHE_HOME` in a fresh folder. Bytes written = the growth of that folder
plus the growth of the source's copy (`datasets` writes `cache-*.arrow` files next to a `save_to_disk` data set).
Training runs start cold (fresh copy and caches).

Evaluation, which does not depend on N, is measured once: `benchmarks.scale_evaluation.measure_evaluation` on
`--eval_images` (5,000) images x `--eval_detections` (100) detections, for boxes, masks and panoptic.

Every measurement is then fitted by least squares as a + b N over the sizes measured (two at least) and evaluated at
train2017's and val2017's sizes; one that does not grow with N (slope <= 0: start-up costs and noise) is extrapolated
as the mean of its values instead, marked. Only the public entry points are used (`load_data`,
`load_detection_dataset`, the `hf-detr` command), so the benchmark keeps measuring as their insides change.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch

from benchmarks.memory import peak_rss_mib
from benchmarks.scale_data import Written, write_coco_folder, write_hub_dataset
from hf_detr import presets
from hf_detr.data import load_data
from hf_detr.data.loading import load_detection_dataset

ROOT = Path(__file__).resolve().parents[1]
SIZES = (1000, 5000, 20000)
QUICK_SIZES = (100, 200)
TRAIN2017, VAL2017 = 118_287, 5_000
SOURCES: dict[str, tuple[str, Callable[..., dict[str, Written]]]] = {
    "coco": ("COCO folder", write_coco_folder),
    "hub": ("Hub-schema save_to_disk (images embedded)", write_hub_dataset),
}
EVALUATIONS = ("boxes", "masks", "panoptic")
EVALUATION_FIELDS = ("seconds", "peak_rss_mib", "over_baseline_mib")  # of measure_evaluation's results
_BIN = Path(sys.executable).parent
_TINY = presets.get("tiny")
# the tiny preset without its labels, which come from the data
TINY_MODEL = {key: value for key, value in _TINY.model.items() if key != "id2label"}
_RESULT = "RESULT "  # the line a child process reports on


# ------------------------------------------------------------------------------------------- measured in a child


def _peak_rss_mib() -> float:
    """The peak RSS of this process or of the largest child process it waited for (e.g. a pool's workers, forked
    from this process, so their `ru_maxrss` starts from this process's own)."""
    return max(peak_rss_mib(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)  # KiB on Linux


def _measure_load(path: str, masks: bool) -> dict[str, Any]:
    baseline = _peak_rss_mib()
    start = time.perf_counter()
    loaded = load_data(path, masks=masks)
    seconds = time.perf_counter() - start
    peak = _peak_rss_mib()
    # counted after the peak is taken, from the Arrow column without decoding a row
    boxes = sum(
        len(box)
        for split in loaded.values()
        for box in split.data.column("objects").combine_chunks().field("bbox").to_pylist()
    )
    return {
        "seconds": seconds,
        "peak_rss_mib": peak,
        "over_baseline_mib": peak - baseline,
        "images": sum(len(split) for split in loaded.values()),
        "boxes": boxes,
    }


def _measure_stream(path: str, max_images: int) -> dict[str, Any]:
    start = time.perf_counter()
    examples = iter(load_detection_dataset(path, splits=["train"], streaming=True)["train"])
    next(examples)["image"].load()
    first = time.perf_counter()
    count = 0
    for example in itertools.islice(examples, max_images - 1):
        example["image"].load()  # decoded (datasets decodes already; a no-op then)
        count += 1
    seconds = time.perf_counter() - first
    return {"setup_seconds": first - start, "images": count + 1, "images_per_second": count / seconds}


def _measure_train(path: str, output_dir: str, processes: int, streaming: bool = False) -> dict[str, Any]:
    args = [
        "--dataset",
        path,
        "--output_dir",
        output_dir,
        "--max_steps",
        "1",
        "--eval_split",
        "none",
        "--model_kwargs",
        json.dumps(TINY_MODEL),
        "--image_size",
        str(_TINY.image_size),
        "--per_device_train_batch_size",
        "2",
        "--save_steps",
        "0",
        "--logging_steps",
        "1",
        "--cpu",
        "--report_to",
        "none",
        "--disable_tqdm",
        *(["--streaming"] if streaming else []),
    ]
    if processes == 1:
        argv = [str(_BIN / "hf-detr"), "train", *args]
    else:  # accelerate's own --cpu flag starts one process: --multi_gpu spawns them, the script's --cpu keeps the CPU
        argv = [
            str(_BIN / "accelerate"),
            "launch",
            "--multi_gpu",
            "--num_processes",
            str(processes),
            "--main_process_port",
            str(_free_port()),
            "-m",
            "hf_detr",
            "train",
            *args,
        ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // processes)),
        "ACCELERATE_CONFIG_FILE": str(Path(output_dir).parent / "no_accelerate_config.yaml"),
    }
    log = Path(output_dir) / "train_log.jsonl"
    output = Path(output_dir).parent / "train_output.txt"  # a file, not a pipe, which a long output would fill
    start = time.perf_counter()
    first_step = None
    peaks: dict[int, float] = {}  # the peak RSS of each process of the run, as last read
    with output.open("w") as stream, subprocess.Popen(argv, env=env, stdout=stream, stderr=subprocess.STDOUT) as run:
        while run.poll() is None:
            if first_step is None and log.is_file() and log.read_text().strip():  # the file starts empty
                first_step = time.perf_counter() - start
            try:
                processes = [run.pid, *(child.pid for child in psutil.Process(run.pid).children(recursive=True))]
            except psutil.NoSuchProcess:  # it has just ended
                processes = []
            peaks.update({pid: max(peaks.get(pid, 0.0), peak_rss_mib(pid)) for pid in processes})
            time.sleep(0.05)
    seconds = time.perf_counter() - start
    if run.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed ({run.returncode}):\n{output.read_text()[-5000:]}")
    if first_step is None and log.is_file() and log.read_text().strip():  # logged in the last poll interval
        first_step = seconds
    return {"first_step_seconds": first_step, "seconds": seconds, "peak_rss_mib": max(peaks.values())}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _measure_evaluation(kind: str, num_images: int, detections: int, backend: str) -> dict[str, Any]:
    from benchmarks.scale_evaluation import measure_evaluation

    return measure_evaluation(num_images=num_images, detections=detections, kind=kind, backend=backend)


_CHILDREN: dict[str, Callable[..., dict[str, Any]]] = {
    "load": _measure_load,
    "stream": _measure_stream,
    "train": _measure_train,
    "evaluate": _measure_evaluation,
}


def _run_child(spec: dict[str, Any]) -> None:
    result = _CHILDREN[spec.pop("measure")](**spec)
    print(_RESULT + json.dumps(result), flush=True)


# ------------------------------------------------------------------------------------------ run by the parent


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder``, a hard-linked file as often as it is linked: what a folder of copies (a
    real COCO folder) holds."""
    return sum(
        os.lstat(os.path.join(directory, name)).st_size for directory, _, files in os.walk(folder) for name in files
    )


def measure(spec: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one measurement in a fresh process; its result."""
    argv = [sys.executable, "-m", "benchmarks.bench_scale", "--child", json.dumps(spec)]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(_RESULT)]
    if done.returncode or not lines:
        raise RuntimeError(
            f"measurement {spec} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-5000:]}"
        )
    return json.loads(lines[-1][len(_RESULT) :])


class Sandbox:
    """A hard-linked copy of a source and fresh cache folders: what a measurement may write to, and measures."""

    def __init__(self, source: Path, folder: Path) -> None:
        self.folder = folder
        self.data = folder / source.name
        shutil.copytree(source, self.data, copy_function=os.link)  # no bytes written; a loader only adds files
        self.cache = folder / "cache"
        # every cache in the folder: datasets', hf_detr's prepared splits (also when the caller's environment sets
        # HF_DETR_CACHE) and any other XDG cache
        self.env = {
            **os.environ,
            "HF_HOME": str(self.cache / "hf"),
            "HF_DATASETS_CACHE": str(self.cache / "datasets"),
            "HF_DETR_CACHE": str(self.cache / "hf_detr"),
            "XDG_CACHE_HOME": str(self.cache / "xdg"),
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
            "TQDM_DISABLE": "1",
        }
        self.cache.mkdir()

    def written(self) -> int:
        return folder_bytes(self.data) + folder_bytes(self.cache)

    def measure(self, spec: dict[str, Any]) -> dict[str, Any]:
        """`measure` with the bytes it wrote (`written_mib`)."""
        before = self.written()
        result = measure(spec, self.env)
        return {**result, "written_mib": (self.written() - before) / 2**20}

    def remove(self) -> None:
        shutil.rmtree(self.folder)


def measure_size(n: int, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement of one size; the data written and the results per source and case."""
    data: dict[str, Any] = {}
    results: dict[str, dict[str, Any]] = {}
    for source in args.sources:
        name, write = SOURCES[source]
        path = workdir / source
        start = time.perf_counter()
        written = next(iter(write(path, n, args.seed).values()))
        data[source] = {
            "images": written.images,
            "boxes": written.boxes,
            "crowd": written.crowd,
            "outside": len(written.outside),
            "mib": folder_bytes(path) / 2**20,
            "generate_seconds": time.perf_counter() - start,
        }
        _report(n, name, "data", data[source])
        results[source] = cases = {}
        for masks in (False, True):
            what = "masks" if masks else "boxes"
            sandbox = Sandbox(path, workdir / f"{source}-{what}")
            for attempt in ("first", "second"):
                cases[f"load {what}, {attempt}"] = sandbox.measure(
                    {"measure": "load", "path": str(sandbox.data), "masks": masks}
                )
                _report(n, name, f"load {what}, {attempt}", cases[f"load {what}, {attempt}"])
            sandbox.remove()
        for processes, streaming in itertools.product(args.train_processes, (False, True)[: 1 + args.train_streaming]):
            sandbox = Sandbox(path, workdir / f"{source}-train")
            case = f"train {processes} process{'es' if processes > 1 else ''}" + (", streamed" if streaming else "")
            cases[case] = sandbox.measure(
                {
                    "measure": "train",
                    "path": str(sandbox.data),
                    "processes": processes,
                    "streaming": streaming,
                    "output_dir": str(sandbox.folder / "run"),
                }
            )
            _report(n, name, case, cases[case])
            sandbox.remove()
        sandbox = Sandbox(path, workdir / f"{source}-stream")
        cases["stream"] = sandbox.measure(
            {"measure": "stream", "path": str(sandbox.data), "max_images": min(n, args.stream_images)}
        )
        # the time to read the whole split at this rate: what extrapolates with N
        cases["stream"]["pass_seconds"] = cases["stream"]["setup_seconds"] + n / cases["stream"]["images_per_second"]
        _report(n, name, "stream", cases["stream"])
        sandbox.remove()
        shutil.rmtree(path)
    return {"data": data, "results": results}


def _report(n: int, source: str, case: str, values: dict[str, Any]) -> None:
    shown = ", ".join(
        f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}" for key, value in values.items()
    )
    print(f"N={n} {source}, {case}: {shown}", flush=True)


# ------------------------------------------------------------------------------------------------ table and fit

# the fields of each case that go in the table (and are extrapolated), with their units
FIELDS = {
    "load": (
        ("seconds", "s"),
        ("peak_rss_mib", "peak RSS MiB"),
        ("over_baseline_mib", "MiB over the imports"),
        ("written_mib", "written MiB"),
    ),
    "train": (
        ("first_step_seconds", "s to first step"),
        ("seconds", "s whole run"),
        ("peak_rss_mib", "peak RSS MiB/process"),
    ),
    "stream": (
        ("images_per_second", "images/s"),
        ("setup_seconds", "s to first image"),
        ("pass_seconds", "s to read the split"),
    ),
}
NOT_EXTRAPOLATED = {"images_per_second"}  # a rate, not a quantity growing with N


def linear_fit(sizes: Sequence[int], values: Sequence[float]) -> tuple[float, float]:
    """(a, b) of the least-squares line a + b N through the measurements (two sizes at least)."""
    slope, intercept = np.polyfit(np.asarray(sizes, dtype=float), np.asarray(values, dtype=float), 1)
    return float(intercept), float(slope)


def table_rows(results: dict[str, Any], sizes: Sequence[int]) -> list[dict[str, Any]]:
    """One row per source, case and field: the values per size and, where it makes sense and two sizes or more were
    measured, the fit and its extrapolation to train2017 and val2017 (the mean of the values, marked `constant`, where
    they do not grow with N)."""
    rows = []
    first = results[str(sizes[0])]["results"]
    for source, cases in first.items():
        for case in cases:
            for field, unit in FIELDS[case.split()[0]]:  # "load", "train" or "stream"
                values = [results[str(n)]["results"][source][case][field] for n in sizes]
                row = {"source": source, "case": case, "field": field, "unit": unit, "values": values}
                if len(sizes) > 1 and field not in NOT_EXTRAPOLATED and None not in values:
                    intercept, slope = linear_fit(sizes, values)
                    if slope > 0:
                        at = {"train2017": intercept + slope * TRAIN2017, "val2017": intercept + slope * VAL2017}
                    else:  # no growth with N measured (start-up costs, noise): a line would go below zero
                        at = dict.fromkeys(("train2017", "val2017"), float(np.mean(values)))
                    row.update(intercept=intercept, slope=slope, constant=slope <= 0, **at)
                rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]], sizes: Sequence[int], evaluation: dict[str, Any]) -> str:
    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3g}"

    label_width = max(len(f"{r['case']}: {r['unit']}") for r in rows) + 2 if rows else 30
    head = f"{'':<{label_width}}" + "".join(f"{f'N={n:,}':>12}" for n in sizes)
    head += f"{'train2017':>12}{'val2017':>12}"
    lines = [head]
    source = None
    for row in rows:
        if row["source"] != source:
            source = row["source"]
            lines.append(SOURCES[source][0])
        label = f"  {row['case']}: {row['unit']}"
        measured = "".join(f"{cell(v):>12}" for v in row["values"])
        mark = "*" if row.get("constant") else ""
        lines.append(
            f"{label:<{label_width}}{measured}"
            + "".join(f"{cell(row.get(at)) + mark:>12}" for at in ("train2017", "val2017"))
        )
    if any(row.get("constant") for row in rows):
        lines.append("* did not grow with N: the mean of the sizes measured, not a line")
    if evaluation:
        lines.append("evaluation (measured once, not extrapolated)")
        for kind, values in evaluation.items():
            lines.append(f"  {kind}: " + ", ".join(f"{key} {cell(values[key])}" for key in EVALUATION_FIELDS))
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    # the load average tells how much else ran on the machine, which these wall times depend on
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(memory, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_average": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="numbers of images N")
    parser.add_argument(
        "--quick", action="store_true", help=f"tiny sizes {QUICK_SIZES}, evaluation of 200 images x 20 detections"
    )
    parser.add_argument("--sources", nargs="+", choices=list(SOURCES), default=list(SOURCES))
    parser.add_argument(
        "--train_processes",
        type=int,
        nargs="*",
        default=[1, 2],
        help="the process counts of the training runs (none: no training run)",
    )
    parser.add_argument(
        "--train_streaming",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time each training run streamed (hf-detr train --streaming)",
    )
    parser.add_argument("--stream_images", type=int, default=2000, help="images read per streaming measurement")
    parser.add_argument(
        "--evaluation",
        nargs="*",
        choices=EVALUATIONS,
        default=list(EVALUATIONS),
        help="evaluations to measure (none: none)",
    )
    parser.add_argument(
        "--coco_backends",
        nargs="+",
        choices=("pycocotools", "numpy"),
        default=["pycocotools", "numpy"],
        help="COCOeval backends of the box and mask evaluations",
    )
    parser.add_argument("--eval_images", type=int, default=VAL2017)
    parser.add_argument("--eval_detections", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="where the data and caches go (default: a temporary folder)")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one measurement, in a fresh process
    args = parser.parse_args(argv)
    if args.child:
        _run_child(json.loads(args.child))
        return {}
    if args.quick:
        args.sizes, args.eval_images, args.eval_detections = list(QUICK_SIZES), 200, 20
    sizes = sorted(set(args.sizes))

    report: dict[str, Any] = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "sizes": sizes,
        "fit": "least squares a + b N over the sizes measured (the mean where b <= 0)",
        "train2017": TRAIN2017,
        "val2017": VAL2017,
        "runs": {},
        "rows": [],
        "evaluation": {"images": args.eval_images, "detections": args.eval_detections},
    }
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        for n in sizes:
            folder = Path(workdir) / str(n)
            folder.mkdir()
            report["runs"][str(n)] = measure_size(n, folder, args)
            shutil.rmtree(folder)
            _save(report, args.out)  # so far: a long run that fails later keeps these
    for kind in args.evaluation:
        for backend in args.coco_backends if kind != "panoptic" else ["pycocotools"]:  # PQ has no COCOeval
            name = kind if backend == "pycocotools" else f"{kind}, {backend} backend"
            report["evaluation"][name] = measure(
                {
                    "measure": "evaluate",
                    "kind": kind,
                    "num_images": args.eval_images,
                    "detections": args.eval_detections,
                    "backend": backend,
                }
            )
            _report(
                args.eval_images,
                "evaluation",
                f"{name}, {args.eval_detections} detections per image",
                {key: report["evaluation"][name][key] for key in EVALUATION_FIELDS},
            )
    report["rows"] = table_rows(report["runs"], sizes)
    report["machine"]["load_average_end"] = os.getloadavg()
    _save(report, args.out)
    print(
        f"\nscale benchmark, {report['date']}, {report['machine']['cpus']} cores, "
        f"{report['machine']['memory_gib']} GiB, load average (1, 5, 15 min) at the start "
        f"{_rounded(report['machine']['load_average'])}, at the end {_rounded(os.getloadavg())}; extrapolated: "
        f"{report['fit']}"
    )
    evaluations = {name: values for name, values in report["evaluation"].items() if isinstance(values, dict)}
    print(format_table(report["rows"], sizes, evaluations))
    return report


def _save(report: dict[str, Any], out: Path | None) -> None:
    if out is not None:
        out.write_text(json.dumps(report, indent=1))


def _rounded(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


if __name__ == "__main__":
    main()
