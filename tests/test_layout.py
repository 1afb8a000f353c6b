"""The package layout's invariants: no import circle, the remote-code set is closed, light commands stay light, old
import paths still work."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import hf_detr
from hf_detr import create_model, presets

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "hf_detr"
MODELING = PACKAGE / "modeling"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """Every import statement of a file, top-level or nested: (level, module, names); level 0 is absolute."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(0, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or "", [alias.name for alias in node.names]))
    return found


def _package_graph() -> dict[str, set[str]]:
    """hf_detr module -> the hf_detr modules it imports (relative imports resolved; `from . import x` counts x)."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for level, module, names in _imports(path):
            if level:
                base = package.rsplit(".", level - 1)[0] if level > 1 else package
                module = f"{base}.{module}" if module else base
            elif not module.startswith("hf_detr"):
                continue
            candidates = [f"{module}.{n}" for n in names if f"{module}.{n}" in modules] or [module]
            edges |= {c for c in candidates if c in modules and c != name}
        graph[name] = edges
    return graph


def test_no_import_circle_among_the_package_modules():
    graph = _package_graph()
    assert len(graph) > 30 and graph["hf_detr.training.loop"]  # the walk sees the package and resolves its imports
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                raise AssertionError("import circle: " + " -> ".join(path[path.index(target) :] + [target]))
            if target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_remote_code_set_imports_only_its_siblings_and_libraries():
    siblings = {path.stem for path in MODELING.glob("*.py")} - {"__init__"}
    assert {"configuration_hf_detr", "modeling_hf_detr", "image_processing_hf_detr", "loss", "matcher"} <= siblings
    for path in MODELING.glob("*.py"):
        if path.name == "__init__.py":
            continue
        for level, module, _ in _imports(path):
            where = f"{path.name}: import of {'.' * level}{module}"
            if level:
                assert level == 1 and module in siblings, f"{where}: only `from .<sibling> import` travels"
            else:
                assert not module.startswith("hf_detr"), f"{where}: the package is absent in a saved folder"
                assert not module.startswith("transformers.models"), f"{where}: the model is ours"


def test_the_package_never_imports_transformers_models():
    """The model is ours: no module of the package imports transformers' own models (comments and strings may
    mention them; the parsed imports are what counts)."""
    offenders = [
        f"{path.relative_to(SRC)}: {module}"
        for path in PACKAGE.rglob("*.py")
        for level, module, names in _imports(path)
        if level == 0 and (module.startswith("transformers.models") or module == "transformers" and "models" in names)
    ]
    assert offenders == []


def test_saved_folder_carries_exactly_the_model_files(tmp_path):
    create_model("tiny").save_pretrained(tmp_path)
    presets.get("tiny").image_processor().save_pretrained(tmp_path)
    code = {path.name for path in tmp_path.glob("*.py")}
    model_set = {path.name for path in MODELING.glob("*.py")} - {"__init__.py"}
    assert code == model_set  # every module the model needs, and nothing of training, data or cards
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModelForObjectDetection"] == "modeling_hf_detr.HfDetrForObjectDetection"


def test_predict_help_imports_no_training_data_or_evaluation_code():
    script = (
        "import sys\n"
        "from hf_detr.apps.cli import main\n"
        "try:\n    main(['predict', '--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = ('datasets', 'pycocotools', 'evaluate', 'hf_detr.training.loop', 'hf_detr.data',"
        " 'hf_detr.evaluation', 'hf_detr.apps.demo', 'hf_detr.training.trainer')\n"
        "print('LOADED', sorted(m for m in sys.modules if m.startswith(heavy)))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage: hf-detr predict" in done.stdout
    assert "LOADED []" in done.stdout, done.stdout[-500:]


def test_main_module_runs_the_command_line():
    done = subprocess.run(
        [sys.executable, "-m", "hf_detr", "train", "--help"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--backbone_learning_rate" in done.stdout


@pytest.mark.parametrize(("old", "new"), sorted(hf_detr._moved.MOVED.items()))
def test_old_import_paths_are_the_moved_modules_and_warn(old, new, monkeypatch):
    monkeypatch.delitem(sys.modules, f"hf_detr.{old}", raising=False)  # a first import, which warns
    message = rf"hf_detr\.{old} moved to hf_detr\.{new}: import it from there; the old path goes in hf_detr 0\.3"
    with pytest.warns(FutureWarning, match=message):
        moved = importlib.import_module(f"hf_detr.{old}")
    assert moved is importlib.import_module(f"hf_detr.{new}")
    assert importlib.import_module(f"hf_detr.{new}").__spec__.name == f"hf_detr.{new}"


def test_the_installed_command_is_not_an_old_path():
    from importlib.metadata import entry_points

    (command,) = entry_points(group="console_scripts", name="hf-detr")
    assert command.value == "hf_detr.apps.cli:main"


@pytest.mark.filterwarnings("ignore:hf_detr.(metrics|train) moved:FutureWarning")
def test_old_names_still_import():
    from hf_detr.evaluation import metrics
    from hf_detr.metrics import make_compute_metrics
    from hf_detr.train import TrainConfig, train
    from hf_detr.training import config, loop

    assert make_compute_metrics is metrics.make_compute_metrics
    assert (TrainConfig, train) == (config.TrainConfig, loop.train)


def test_running_an_old_module_path_says_where_the_command_went():
    done = subprocess.run(
        [sys.executable, "-m", "hf_detr.train", "--help"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode != 0
    assert "hf_detr.train moved to hf_detr.training" in done.stderr and "python -m hf_detr train" in done.stderr
