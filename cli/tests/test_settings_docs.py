"""The settings tables of the docs say what the settings classes say (`cdap docs settings`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from cdap_cli import settings_docs

CDAP = str(Path(sys.executable).with_name("cdap"))


def test_every_settings_table_agrees_with_its_class() -> None:
    assert settings_docs.stale() == [], "run `.venv/bin/cdap docs settings` and commit the pages"
    run = subprocess.run([CDAP, "docs", "settings", "--check"], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_setting_says_what_it_does() -> None:
    assert settings_docs.undescribed() == []


def test_a_changed_default_or_a_missing_row_is_caught(tmp_path: Path) -> None:
    for page in settings_docs.pages():
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(settings_docs.ROOT / page, tmp_path / page)
    identity = tmp_path / "docs/identity.md"
    text = identity.read_text()
    assert '| `CDAP_TOTP_PROFILES` | `totp_profiles` | `["T1", "T5"]` |' in text
    identity.write_text(text.replace('`["T1", "T5"]`', '`["T1"]`'))
    dossiers = tmp_path / "docs/dossiers.md"
    dossiers.write_text(
        "".join(line for line in dossiers.read_text().splitlines(True) if "CDAP_POLICY_PATH" not in line)
    )
    assert settings_docs.stale(tmp_path) == ["docs/identity.md", "docs/dossiers.md"]
    # Writing the tables puts them right and leaves the hand-written text alone.
    assert settings_docs.write(tmp_path) == ["docs/identity.md", "docs/dossiers.md"]
    assert settings_docs.stale(tmp_path) == []
    assert identity.read_text() == (settings_docs.ROOT / "docs/identity.md").read_text()
