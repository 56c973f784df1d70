"""The documentation cannot rot: every `python train.py ...` and `python evaluate.py ...` written in README.md
and docs/*.md (in code blocks and in inline code) composes with Hydra and passes the checks the entry point
runs before it reads any data. Nothing is trained or evaluated.

Placeholders a reader fills in are given a value of the right kind: `<run>` and other `<...>` become a dummy
path part, `[...]` a one-item list, a seed or count written as `S` or `N` the number 1, and a bare `...`
(more arguments) is dropped. A sweep (`-m`, `a=x,y`) is composed once per combination of its values.
"""

from __future__ import annotations

import itertools
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, open_dict
from omegaconf.errors import OmegaConfBaseException

from digitrec.errors import DigitrecError

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 200

CONFIG_OF = {"train.py": "train", "evaluate.py": "eval"}  # entry point -> its config in conf/
PYTHONS = {"python", "python3"}
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(?<!`)`([^`\n]+(?:\n[^`\n]+)*)`(?!`)")  # may wrap lines, never a paragraph break
COMMENT = re.compile(r"(^|\s)#.*$")
ANGLE_PLACEHOLDER = re.compile(r"<[^<>\n]+>")
NUMBER_PLACEHOLDERS = {"S", "N"}  # seed=S, trainer.max_epochs=N
HYDRA_FLAGS_WITH_VALUE = {
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--config-name",
    "-cn",
    "--config-path",
    "-cp",
    "--config-dir",
    "-cd",
    "--experimental-rerun",
}


@dataclass(frozen=True)
class Command:
    where: str  # file:line, as a reader finds it
    text: str  # the command as written (continuations joined)
    config: str  # "train" or "eval"
    arguments: tuple[str, ...]  # what follows the entry point, placeholders filled in


def code_snippets(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each shell line in a fenced code block and of each inline code span."""
    prose: list[tuple[int, str]] = []
    in_block, start, pending = False, 0, ""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            in_block, pending = not in_block, ""
            continue
        if not in_block:
            prose.append((number, line))
            continue
        line = COMMENT.sub("", line).rstrip()
        if not pending:
            start = number
        if line.endswith("\\"):  # a continuation: the command goes on on the next line
            pending += line[:-1] + " "
            continue
        yield start, pending + line
        pending = ""
    text = "\n".join(line for _, line in prose)
    for match in INLINE_CODE.finditer(text):
        yield prose[text.count("\n", 0, match.start())][0], match.group(1).replace("\n", " ")


def fill_placeholders(argument: str) -> str:
    key, sep, value = argument.partition("=")
    if sep and value in NUMBER_PLACEHOLDERS:
        return f"{key}=1"
    return argument.replace("[...]", "[placeholder]")


def entry_point_arguments(tokens: list[str]) -> tuple[str, list[str]] | None:
    """The config and the arguments of a train.py / evaluate.py command (python, torchrun or make train)."""
    if tokens[:2] == ["make", "train"]:
        given = [t.removeprefix("ARGS=") for t in tokens[2:] if t.startswith("ARGS=")]
        return "train", shlex.split(given[0]) if given else []
    for i, token in enumerate(tokens):
        name = Path(token).name
        if name in CONFIG_OF and i > 0 and (tokens[i - 1] in PYTHONS or tokens[0] == "torchrun"):
            return CONFIG_OF[name], tokens[i + 1 :]
    return None


def commands_in(path: Path, name: str | None = None) -> Iterator[Command]:
    """The train.py / evaluate.py commands of one page; `name` says where they are (default: the path in the repo)."""
    name = name or str(path.relative_to(REPO))
    for number, snippet in code_snippets(path):
        if not any(name in snippet for name in CONFIG_OF) and "make train" not in snippet:
            continue
        try:
            tokens = shlex.split(ANGLE_PLACEHOLDER.sub("placeholder", snippet))
        except ValueError:  # not a shell command (unbalanced quotes in prose)
            continue
        found = entry_point_arguments(tokens)
        if found is not None:
            config, arguments = found
            yield Command(
                f"{name}:{number}",
                " ".join(snippet.split()),
                config,
                tuple(fill_placeholders(a) for a in arguments if a != "..."),
            )


COMMANDS = [command for page in PAGES for command in commands_in(page)]


def overrides_of(arguments: tuple[str, ...]) -> list[str]:
    """The key=value overrides, without Hydra's own flags (-m, --cfg job, --help, ...)."""
    overrides, skip = [], False
    for argument in arguments:
        if skip:
            skip = False
        elif argument in HYDRA_FLAGS_WITH_VALUE:
            skip = True
        elif not argument.startswith("-"):
            overrides.append(argument)
    return overrides


def each_job(overrides: list[str]) -> Iterator[list[str]]:
    """One override list per job of a sweep (`model=mlp,cnn` is two jobs); a plain command is one job."""
    choices = []
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_sweep_override():
            key = override.input_line.split("=", 1)[0]
            choices.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            choices.append([override.input_line])
    for job in itertools.product(*choices):
        yield list(job)


def compose_checked(config: str, overrides: list[str], run_dir: Path) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)  # set by @hydra.main in a real run
    HydraConfig.instance().set_config(cfg)  # lets ${hydra:...} interpolations resolve
    if config == "train":
        from digitrec.training.config import check_config

        check_config(cfg)
    else:
        from digitrec.evaluation.report import EvalOptions

        EvalOptions.from_config(cfg)
    return cfg


@pytest.mark.parametrize("command", COMMANDS, ids=[f"{c.where} {c.config}" for c in COMMANDS])
def test_every_documented_command_composes(command: Command, tmp_path: Path) -> None:
    for overrides in each_job(overrides_of(command.arguments)):
        try:
            compose_checked(command.config, overrides, tmp_path)
        except (HydraException, OmegaConfBaseException, DigitrecError) as e:  # say which command, as written
            pytest.fail(f"{command.where}: `{command.text}` does not compose ({overrides}):\n{type(e).__name__}: {e}")


def test_the_docs_hold_commands_of_both_entry_points() -> None:
    """The extraction itself works: a change to the docs' format must not make this test vacuous."""
    configs = {c.config for c in COMMANDS}
    assert configs == {"train", "eval"}, configs
    assert len(COMMANDS) >= 40, [c.where for c in COMMANDS]
    assert any(c.where.startswith("README.md") for c in COMMANDS)


def test_a_sweep_is_composed_once_per_job() -> None:
    assert list(each_job(["model=mlp,cnn", "seed=1", "trainer.max_epochs=1,2"])) == [
        ["model=mlp", "seed=1", "trainer.max_epochs=1"],
        ["model=mlp", "seed=1", "trainer.max_epochs=2"],
        ["model=cnn", "seed=1", "trainer.max_epochs=1"],
        ["model=cnn", "seed=1", "trainer.max_epochs=2"],
    ]
    assert list(each_job(["model.channels=[64,128]"])) == [["model.channels=[64,128]"]]


def test_commands_are_found_in_blocks_inline_and_across_lines(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "Run `python train.py model=mlp\nseed=S` or `evaluate.py x=1`.\n\n"
        "```bash\npython evaluate.py 'ckpt_path=[a,b]' \\\n    tta=true   # an ensemble\n"
        "torchrun --nproc-per-node=2 train.py trainer=ddp_cpu hydra.run.dir=outputs/<run>\n"
        'make train ARGS="model=mlp trainer.max_epochs=5"\n```\n',
        encoding="utf-8",
    )
    found = [(c.where, c.config, c.arguments) for c in commands_in(page, name="page.md")]
    assert found == [
        ("page.md:5", "eval", ("ckpt_path=[a,b]", "tta=true")),
        ("page.md:7", "train", ("trainer=ddp_cpu", "hydra.run.dir=outputs/placeholder")),
        ("page.md:8", "train", ("model=mlp", "trainer.max_epochs=5")),
        ("page.md:1", "train", ("model=mlp", "seed=1")),
    ]


def test_readme_is_one_screen() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_links_between_pages_point_at_files(page: Path) -> None:
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8"))
    missing = [t for t in targets if "://" not in t and not (page.parent / t).exists()]
    assert not missing, f"{page.relative_to(REPO)} links to missing files: {missing}"
