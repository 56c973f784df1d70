"""Every argument a config file lists carries the default of the class it configures, unless its line
says `# digitrec` (a deliberate choice of this project): the files cannot drift from the code."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from digitrec.training.config import _locate

CONF = Path(__file__).resolve().parents[1] / "conf"
FILES = [
    *sorted(CONF.glob("data/*.yaml")),
    *sorted(CONF.glob("model/*.yaml")),
    *sorted(CONF.glob("optimizer/*.yaml")),
    *sorted(CONF.glob("scheduler/*.yaml")),
    *sorted(CONF.glob("callbacks/*.yaml")),
    *sorted(CONF.glob("logger/*.yaml")),
    CONF / "trainer" / "default.yaml",
    CONF / "train.yaml",
]


def marked_keys(text: str) -> set[str]:
    """The dotted keys whose line carries a `# digitrec` comment."""
    marked, stack = set(), []  # stack of (indent, key)
    for line in text.splitlines():
        match = re.match(r"^(\s*)([A-Za-z_][\w]*):", line)
        if not match:
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group(2)))
        if re.search(r"#\s*digitrec\b", line):
            marked.add(".".join(key for _, key in stack))
    return marked


def components(path: Path) -> list[tuple[str, dict[str, Any], Any]]:
    """(dotted prefix, node, class) for each node of the file that names its class; trainer/default.yaml
    configures `lightning.Trainer`. Interpolations stay unresolved (`${...}` strings)."""
    cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    if path == CONF / "trainer" / "default.yaml":
        return [("", cfg, _locate("lightning.pytorch.Trainer"))]
    nodes = [("", cfg)] + [(f"{k}.", v) for k, v in cfg.items() if isinstance(v, dict)]
    return [(prefix, node, _locate(node["_target_"])) for prefix, node in nodes if "_target_" in node]


def plain(value: Any) -> Any:
    return [plain(v) for v in value] if isinstance(value, (list, tuple)) else value


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(CONF)))
def test_listed_arguments_carry_the_class_defaults_unless_marked(path: Path) -> None:
    marked = marked_keys(path.read_text())
    checked = 0
    for prefix, node, target in components(path):
        parameters = inspect.signature(target).parameters
        for key in node:
            value = node[key]
            if key.startswith("_") or (isinstance(value, str) and value.startswith("${")):
                continue
            assert key in parameters, f"{path.name}: {prefix}{key} is not an argument of {target.__qualname__}"
            default = parameters[key].default
            if default is inspect.Parameter.empty:
                continue  # required: the file's value is the only one
            checked += 1
            if f"{prefix}{key}" in marked:
                assert plain(value) != plain(default), (
                    f"{path.name}: {prefix}{key} is marked digitrec but is the default"
                )
            else:
                assert plain(value) == plain(default), (
                    f"{path.name}: {prefix}{key} = {value!r}, but {target.__qualname__} defaults to {default!r}; "
                    "list the default, or mark a deliberate choice with `# digitrec`"
                )
    assert checked or path.parent.name == "scheduler", f"{path.name} lists no argument with a default"


def test_the_marker_reader_follows_nesting() -> None:
    text = "a:\n  b: 1  # digitrec\n  c: 2\nd: 3 # digitrec: why\n"
    assert marked_keys(text) == {"a.b", "d"}
