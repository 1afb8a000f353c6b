"""Check at the boundary (issue 24): boxes are checked where data enters hf_detr and trusted after, and no module
reaches into another package's private names."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "hf_detr"
CHECKS = {"check_boxes", "box_flags"}

# (module, function) of every call of the box check, outside modeling/boxes.py which defines it
BOX_CHECK_ENTRIES = {
    # the data loaders: every split's boxes go through the box policy
    ("hf_detr.data.box_policy", "apply_box_policy"),
    # the image processor's COCO annotations
    ("hf_detr.modeling.coco_annotations", "_coco_target"),
    # the model's user-supplied `labels`
    ("hf_detr.modeling.loss", "validate_labels"),
    # the public metrics' inputs: coco_evaluate, the evaluate.Metric classes' add/add_batch, duplicate counts
    ("hf_detr.evaluation.coco_inputs", "prediction_arrays"),
    ("hf_detr.evaluation.coco_inputs", "reference_arrays"),
    # the diagnostics' public entry for one image (diagnose reads an evaluation already checked)
    ("hf_detr.evaluation.diagnostics", "match_image"),
}

# Imports of a private name from another hf_detr package that are allowed (none: a name shared across packages is
# public). A new one fails the test.
PRIVATE_IMPORT_ALLOWLIST: set[tuple[str, str, str]] = set()


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def _is_package(module: str) -> bool:
    return (SRC / module.replace(".", "/") / "__init__.py").exists()


def _package(module: str) -> str:
    return module if _is_package(module) else module.rpartition(".")[0]


def _calls_by_function(tree: ast.AST, names: set[str]) -> Iterator[str]:
    """The innermost enclosing function of every call of one of `names` ("<module>" at the top level)."""

    def visit(node: ast.AST, function: str) -> Iterator[str]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Call):
                func = child.func
                if (func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)) in names:
                    yield function
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            yield from visit(child, inner)

    yield from visit(tree, "<module>")


def box_check_call_sites() -> set[tuple[str, str]]:
    return {
        (module, function)
        for module, path in _modules()
        if module != "hf_detr.modeling.boxes"
        for function in _calls_by_function(ast.parse(path.read_text()), CHECKS)
    }


def private_cross_package_imports() -> set[tuple[str, str, str]]:
    """(importing module, imported module, private name) of every `from X import _name` whose X lies in another
    hf_detr package than the importing module (within a package, private names are shared on purpose)."""
    found = set()
    for module, path in _modules():
        own = _package(module)
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = ".".join(own.split(".")[: len(own.split(".")) - node.level + 1])
                source = f"{base}.{node.module}" if node.module else base
            elif (node.module or "").split(".")[0] == "hf_detr":
                source = node.module
            else:
                continue
            for alias in node.names:
                # `from . import _x` imports a private module of `source`: that module's package is `source`
                target = f"{source}.{alias.name}"
                package = target if _is_package(target) else _package(source)
                if alias.name.startswith("_") and package != own:
                    found.add((module, source, alias.name))
    return found


def test_boxes_are_checked_at_the_entry_points_only():
    found = box_check_call_sites()
    assert found == BOX_CHECK_ENTRIES, (
        f"unexpected box checks: {sorted(found - BOX_CHECK_ENTRIES)}; gone: {sorted(BOX_CHECK_ENTRIES - found)}. "
        "Boxes are checked where data enters (loaders, the processor's annotations, the model's labels, the public "
        "metrics) and trusted after: an internal path calls the unchecked core."
    )


def test_the_call_site_walk_sees_nested_and_attribute_calls():
    tree = ast.parse(
        "def outer():\n    def inner():\n        boxes.check_boxes(x)\n    return [box_flags(y) for y in z]\n"
        "check_boxes(w)\n"
    )
    assert sorted(_calls_by_function(tree, CHECKS)) == ["<module>", "inner", "outer"]


def test_no_module_imports_a_private_name_of_another_package():
    found = private_cross_package_imports()
    assert found <= PRIVATE_IMPORT_ALLOWLIST, (
        f"private names imported across packages: {sorted(found - PRIVATE_IMPORT_ALLOWLIST)}; make them public in "
        "their own package (or move the caller)"
    )
    assert not PRIVATE_IMPORT_ALLOWLIST - found, (
        f"fixed, remove from the allowlist: {sorted(PRIVATE_IMPORT_ALLOWLIST - found)}"
    )


def test_the_private_import_walk_resolves_relative_imports():
    assert _package("hf_detr.data.coco") == "hf_detr.data" and _package("hf_detr.data") == "hf_detr.data"
    assert _package("hf_detr.presets") == "hf_detr"
