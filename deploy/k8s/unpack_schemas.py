"""Unpack one Kubernetes release's JSON schemas from the kubernetes-validate wheel, for kubeconform.

    python3 deploy/k8s/unpack_schemas.py WHEEL v1.33.0-local-strict DEST

The package's schemas carry an `$id` under https://kubernetes.io/api/ and point at their shared
definitions as `/api/_definitions.json`, resolved against that `$id` (a URL its own resolver serves).
kubeconform would fetch that URL, which CI cannot reach: so each schema loses its `$id` (its base URL
is then its file) and the reference names the sibling file `_definitions.json`.
"""

from __future__ import annotations

import json
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
            schema = json.loads(
                archive.read(name).decode().replace('"/api/_definitions.json#', '"_definitions.json#')
            )
            schema.pop("$id", None)
            (dest / name.removeprefix(folder)).write_text(json.dumps(schema))


if __name__ == "__main__":
    main()
