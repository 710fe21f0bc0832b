"""The settings tables of the docs, written from the pydantic-settings classes (`cdap docs settings`).

Each service's page (`docs/<service>.md`) holds the settings its own class declares or overrides;
`docs/configuration.md` the ones every service inherits from `cdap_shared.settings.ServiceSettings`.
A table sits between `<!-- settings:begin -->` and `<!-- settings:end -->`; everything else on the
page is written by hand. `cdap docs settings --check` (and cli/tests/test_settings_docs.py) fails
when a table and its class disagree.
"""

from __future__ import annotations

import importlib
import inspect
import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from cdap_shared.services import SERVICES
from cdap_shared.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[3]
BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"
COMMON_PAGE = "docs/configuration.md"


@dataclass(frozen=True)
class Setting:
    """One row of a table: what an operator sets, and what happens when they do not."""

    name: str
    variable: str
    default: str
    description: str


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value: Any = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if value is None:
        return "unset"
    if isinstance(value, Path):
        # A file shipped in a package: named from the package, the same in a checkout and an image.
        parts = value.parts
        return f"`{'/'.join(parts[parts.index('src') + 1 :])}`" if "src" in parts else f"`{value}`"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    return f"`{json.dumps(value, default=str)}`"


def settings_of(cls: type[BaseSettings], *, own_only: bool) -> list[Setting]:
    """The rows of `cls`: with `own_only`, the fields its body declares (new ones and overrides);
    an override without a description keeps the one it overrides."""
    prefix = cls.model_config.get("env_prefix", "")
    declared = inspect.get_annotations(cls)
    rows = []
    for name, field in cls.model_fields.items():
        if own_only and name not in declared:
            continue
        inherited = ServiceSettings.model_fields.get(name)
        description = field.description or (inherited.description if inherited else None) or ""
        variable = field.validation_alias if isinstance(field.validation_alias, str) else prefix + name
        rows.append(Setting(name, variable.upper(), _default(field), " ".join(description.split())))
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(rows: list[Setting]) -> str:
    """The Markdown table of `rows`, in the classes' order."""
    lines = ["| environment variable | setting | default | description |", "| --- | --- | --- | --- |"]
    lines += [f"| `{r.variable}` | `{r.name}` | {r.default} | {_cell(r.description)} |" for r in rows]
    return "\n".join(lines)


def pages() -> dict[str, list[Setting]]:
    """Each page (relative to the repository) and the rows its table must hold."""
    found = {COMMON_PAGE: settings_of(ServiceSettings, own_only=False)}
    for service in SERVICES:
        cls = importlib.import_module(f"{service.package}.config").Settings
        found[f"docs/{service.name}.md"] = settings_of(cls, own_only=True)
    return found


def with_table(text: str, rows: list[Setting], page: str) -> str:
    """`text` with its table between the markers replaced by the one of `rows`."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{page}: no {BEGIN} ... {END} block for the settings table")
    return f"{text[: start + len(BEGIN)]}\n{table(rows)}\n{text[end:]}"


def stale(root: Path = ROOT) -> list[str]:
    """The pages whose table differs from their settings class (empty: the docs agree)."""
    found = []
    for page, rows in pages().items():
        text = (root / page).read_text()
        if with_table(text, rows, page) != text:
            found.append(page)
    return found


def write(root: Path = ROOT) -> list[str]:
    """Rewrite every table from the classes; the pages that changed."""
    changed = []
    for page, rows in pages().items():
        text = (root / page).read_text()
        if (new := with_table(text, rows, page)) != text:
            (root / page).write_text(new)
            changed.append(page)
    return changed


def undescribed() -> list[str]:
    """Settings with no description, as `page: CDAP_X` (every row must say what it does)."""
    return [f"{page}: {r.variable}" for page, rows in pages().items() for r in rows if not r.description]
