"""Unpack one Kubernetes release's JSON schemas from the kubernetes-validate wheel, for kubeconform.

    python3 deploy/k8s/unpack_schemas.py WHEEL v1.33.0-local-strict DEST

The package's schemas point at their shared definitions as `/api/_definitions.json` (a path its own
resolver serves); kubeconform resolves a `$ref` against the schema file's location, so the reference
is rewritten to the sibling file `_definitions.json`.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

PREFIX = "kubernetes_validate/kubernetes-json-schema/"


def main() -> None:
    wheel, release, dest = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    dest.mkdir(parents=True, exist_ok=True)
    folder = f"{PREFIX}{release}/"
    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if n.startswith(folder) and n.endswith(".json")]
        if not names:
            sys.exit(f"{wheel} has no schemas for {release}")
        for name in names:
            text = archive.read(name).decode().replace('"/api/_definitions.json#', '"_definitions.json#')
            (dest / name.removeprefix(folder)).write_text(text)


if __name__ == "__main__":
    main()
