"""The consultation policy as far as the lookup form needs it: motifs per profile, and whether a profile
must give the family name (scope `match`) or may search.

The dossiers service has no endpoint that publishes its policy, so the portal reads the same TOML file
(`CDAP_POLICY_PATH`, else the one shipped next to the `cdap_dossiers` package when it is installed).
Nothing here decides anything: the dossiers service still judges every lookup; a wrong form only means
a refusal the user can read.
"""

from __future__ import annotations

import importlib.util
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ProfileRules:
    name: str
    label: str
    motifs: tuple[str, ...]
    sections: tuple[str, ...]
    needs_family_name: bool
    searchable: bool


@dataclass(frozen=True)
class PolicyView:
    profiles: dict[str, ProfileRules] = field(default_factory=dict)

    def known(self) -> bool:
        return bool(self.profiles)


def default_policy_path() -> Path | None:
    """`policy.toml` beside the dossiers package, found without importing it."""
    spec = importlib.util.find_spec("cdap_dossiers")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "policy.toml"
        if candidate.is_file():
            return candidate
    return None


def load_policy_view(path: Path | None) -> PolicyView:
    """Read the policy; an unreadable one gives an empty view (the form then asks for a free motif)."""
    path = path or default_policy_path()
    if path is None:
        log.warning("no consultation policy found: motifs will be typed, not chosen")
        return PolicyView()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        profiles = {
            name: ProfileRules(
                name=name,
                label=str(body.get("label", name)),
                motifs=tuple(str(m) for m in body.get("motifs", ())),
                sections=tuple(str(s) for s in body.get("sections", ())),
                needs_family_name=body.get("scope") == "match",
                searchable=bool(body.get("searchable", False)),
            )
            for name, body in raw.get("profiles", {}).items()
        }
    except (OSError, tomllib.TOMLDecodeError, AttributeError, TypeError) as exc:
        log.warning("consultation policy unreadable", path=str(path), error=type(exc).__name__)
        return PolicyView()
    return PolicyView(profiles)
