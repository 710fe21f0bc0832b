"""Configuration as data: TOML files validated by a pydantic model when a service starts.

A file that cannot be used stops the service with a readable reason (SystemExit), never a traceback.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def load_toml(path: Path, model: type[M], *, what: str, env: str, error: type[SystemExit] = SystemExit) -> M:
    """Read `path` and validate it as `model`; raise `error` naming the file and each problem.

    `what` names the file for people ("policy file"); `env` is the setting that points elsewhere.
    """
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise error(f"{what} {path} not found: set {env}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{what} {path} is not valid TOML: {exc}") from exc
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_input=False)
        )
        raise error(f"{what} {path} is invalid: {problems}") from exc
