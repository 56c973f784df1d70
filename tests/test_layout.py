"""The package's shape, read from its source: subpackages by job, the import rules between them, short modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "digitrec"
FRAMEWORKS = ("lightning", "pytorch_lightning", "hydra", "omegaconf", "torchmetrics")
# what a module may not import, by where it lives: inference and serving start fast and run without training code
RULES = {
    "inference": (*FRAMEWORKS, "digitrec.training", "digitrec.evaluation", "digitrec.bench"),
    "serve": (*FRAMEWORKS, "digitrec.training", "digitrec.evaluation", "digitrec.bench"),
    "feedback": (*FRAMEWORKS, "digitrec.training", "digitrec.evaluation", "digitrec.bench"),
    "evaluation/figures.py": ("lightning", "pytorch_lightning", "hydra"),
    "data/mnist.py": FRAMEWORKS,
    "data/numbers.py": FRAMEWORKS,
    "data/augment.py": FRAMEWORKS,
    "data/corruptions.py": FRAMEWORKS,
    "data/training_corruptions.py": FRAMEWORKS,
    "models": FRAMEWORKS,
    "errors.py": (*FRAMEWORKS, "torch"),
    "validation.py": (*FRAMEWORKS, "torch"),
}
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "pretrained" not in p.parts)


def imported(path: Path) -> set[str]:
    """Every module an `import` or `from ... import` anywhere in the file names (lazy imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def forbidden_for(path: Path) -> tuple[str, ...]:
    relative = path.relative_to(PACKAGE).as_posix()
    return tuple(
        name for key, names in RULES.items() if relative == key or relative.startswith(key + "/") for name in names
    )


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_imports_follow_the_rules_of_the_module_map(path: Path) -> None:
    forbidden = forbidden_for(path)
    broken = sorted(m for m in imported(path) if any(m == f or m.startswith(f + ".") for f in forbidden))
    assert not broken, f"{path.relative_to(PACKAGE)} imports {broken} (see docs/design.md, import rules)"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_no_module_is_longer_than_300_lines(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= 300, "split it by concern"


def test_every_subpackage_says_its_job_in_its_docstring() -> None:
    packages = sorted(p.parent for p in PACKAGE.rglob("__init__.py"))
    assert {p.name for p in packages} >= {
        "digitrec",
        "data",
        "models",
        "training",
        "evaluation",
        "inference",
        "serve",
        "bench",
        "feedback",
    }
    for package in packages:
        docstring = ast.get_docstring(ast.parse((package / "__init__.py").read_text()))
        assert docstring, f"{package.name}/__init__.py has no docstring"


def test_the_rules_catch_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from lightning import Trainer\n    import digitrec.training.module\n")
    assert imported(module) == {"lightning", "digitrec.training.module"}
    assert "lightning" in forbidden_for(PACKAGE / "inference" / "predictor.py")
    assert "lightning" not in forbidden_for(PACKAGE / "training" / "module.py")


def test_predicting_exporting_serving_and_feedback_start_without_the_training_frameworks() -> None:
    """What a fresh interpreter holds after importing every inference entry point: no framework, however reached."""
    entry_points = (
        "digitrec.inference.predictor",
        "digitrec.inference.cli",
        "digitrec.inference.export",
        "digitrec.serve.app",
        "digitrec.serve.__main__",
        "digitrec.feedback.cli",
    )
    code = f"import sys, {', '.join(entry_points)}; print(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
