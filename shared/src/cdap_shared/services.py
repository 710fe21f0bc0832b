"""The services of CDAP, listed once: what the local tools (`make run`, `make reset`, the stack script),
the image's entry point, the tests' harnesses and the benchmarks know of each one.

`python -m cdap_shared.services names|packages|databases` prints one column, for shell scripts;
`python -m cdap_shared.services package NAME` the package of one service (exit 64 when unknown).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceInfo:
    name: str  # its folder under services/, its CDAP_SERVICE_NAME, its Kafka principal `cdap-<name>`
    package: str  # its Python package: `uvicorn --factory <package>.app:build`
    port: int  # where it listens in the local stack (`make run`)
    database: str | None  # its local PostgreSQL database and role (None: it owns no database)


SERVICES = (
    ServiceInfo("identity", "cdap_identity", 8001, "cdap_identity"),
    ServiceInfo("access-requests", "cdap_access", 8002, "cdap_access"),
    ServiceInfo("dossiers", "cdap_dossiers", 8003, "cdap_dossiers"),
    ServiceInfo("audit", "cdap_audit", 8004, "cdap_audit"),
    ServiceInfo("portal", "cdap_portal", 8000, None),
)


def backends() -> tuple[str, ...]:
    """The services behind the portal: those that own a database and consume events."""
    return tuple(s.name for s in SERVICES if s.database)


def local_url(name: str) -> str:
    """Where service `name` answers in the local stack: the default of every setting that points at it."""
    return f"http://127.0.0.1:{service(name).port}"


def service(name: str) -> ServiceInfo:
    """The service called `name`; `KeyError` naming the known ones otherwise."""
    for info in SERVICES:
        if info.name == name:
            return info
    raise KeyError(f"unknown service {name!r} ({', '.join(s.name for s in SERVICES)})")


def main(argv: list[str]) -> int:
    columns = {
        "names": [s.name for s in SERVICES],
        "packages": [s.package for s in SERVICES],
        "databases": [s.database for s in SERVICES if s.database],
    }
    if len(argv) == 2 and argv[0] == "package":
        try:
            print(service(argv[1]).package)
        except KeyError as exc:
            print(exc.args[0], file=sys.stderr)
            return 64
        return 0
    if len(argv) != 1 or argv[0] not in columns:
        print("usage: python -m cdap_shared.services names|packages|databases|package NAME", file=sys.stderr)
        return 64
    print("\n".join(columns[argv[0]]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
