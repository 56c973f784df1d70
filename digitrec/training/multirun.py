"""A job of a Hydra multirun (`python train.py -m ...`): one that fails records why, and the sweep goes on.

No Lightning here: train.py imports this before it knows whether it will train.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from digitrec.errors import find_user_error, logger_name

P = ParamSpec("P")


def keep_sweep_going(func: Callable[P, float]) -> Callable[P, float]:
    """Decorate a Hydra task: in a multirun, a failed job records its error in `summary.json` and the sweep goes on."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> float:
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            return func(*args, **kwargs)
        try:
            return func(*args, **kwargs)
        except Exception as e:
            logging.getLogger(logger_name(func)).exception("This job failed; the sweep goes on.")
            error = find_user_error(e) or e
            out = Path(HydraConfig.get().runtime.output_dir) / "summary.json"
            out.write_text(
                json.dumps({"status": "failed", "error": f"{type(error).__name__}: {error}"}, indent=2) + "\n"
            )
            return float("nan")

    return wrapper
