"""What each package may import, read from its source files (ast), and what each member declares.

- A service's runtime package imports no other service's package, nor the CLI, nor test support.
- `cdap_shared` imports no service, no CLI, no test support.
- Runtime code (`cdap_shared`, every service, the CLI) imports no test library; only the CLI imports a
  command-line library (typer, rich): a service's commands live in the CLI.
- The CLI and the benchmarks use only public names of CDAP's packages (no `_private`).
- No service or `cdap-shared` declares another service, the CLI, test support or a test library as a
  runtime dependency; only the workspace's dev group brings `cdap-testing`.
- What a service installs (its locked dependencies, followed through uv.lock) holds no test library,
  no command-line library and no local-only tool, and each dependency it declares is one its code
  imports (a generator of sample data belongs to the CLI, which runs it).
- Every service's `domain.py` reaches no I/O library (database, broker, HTTP, templates, mail), not even
  through the CDAP modules it imports.
"""

from __future__ import annotations

import ast
import importlib.metadata
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from cdap_shared.services import SERVICES

ROOT = Path(__file__).resolve().parents[1]
SERVICE_PACKAGES = {s.package: s.name for s in SERVICES}
TEST_LIBRARIES = {"pytest", "_pytest", "hypothesis", "schemathesis", "testcontainers", "cdap_testing"}
# Distributions a runtime member must not depend on: test libraries, and local-only tools.
TEST_DISTRIBUTIONS = {"pytest", "hypothesis", "schemathesis", "testcontainers", "cdap-testing", "aiosmtpd"}
# The command line's libraries: the CLI (`cdap`) has them, a service never runs with them (click is
# not among them: uvicorn, which serves every service, is built on it).
CLI_LIBRARIES = {"typer", "rich"}


@dataclass(frozen=True)
class Import:
    file: Path
    line: int
    module: str  # the module imported from, absolute
    name: str | None  # the name taken from it (`from module import name`), else None

    def __str__(self) -> str:
        what = f"{self.module}.{self.name}" if self.name else self.module
        return f"{self.file.relative_to(ROOT)}:{self.line} imports {what}"


def imports_in(source: str, file: Path) -> Iterator[Import]:
    """Every import of `source` (also those inside functions), and every `module._name` it reads from
    an imported CDAP module."""
    tree = ast.parse(source, str(file))
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
                yield Import(file, node.lineno, alias.name, None)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                yield Import(file, node.lineno, node.module, alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            module = aliases.get(node.value.id, "")
            if module.startswith("cdap_") and node.attr.startswith("_") and not node.attr.startswith("__"):
                yield Import(file, node.lineno, module, node.attr)


def imports_under(folder: Path) -> list[Import]:
    return [i for path in sorted(folder.rglob("*.py")) for i in imports_in(path.read_text(), path)]


def top(module: str) -> str:
    return module.split(".")[0]


def private(item: Import) -> bool:
    parts = [*item.module.split("."), *([item.name] if item.name else [])]
    return any(p.startswith("_") and not p.startswith("__") for p in parts)


def runtime_packages() -> dict[str, Path]:
    """package -> source folder, for cdap_shared, each service and the CLI."""
    found = {s.package: ROOT / "services" / s.name / "src" / s.package for s in SERVICES}
    return {"cdap_shared": ROOT / "shared/src/cdap_shared", "cdap_cli": ROOT / "cli/src/cdap_cli", **found}


def test_the_walker_sees_what_the_rules_forbid() -> None:
    """The checks below can fail: the walker finds each kind of import they refuse."""
    source = (
        "import pytest\n"
        "from cdap_audit.merkle import _split\n"
        "def f():\n"
        "    from cdap_dossiers import policy\n"
        "    from cdap_identity import passwords\n"
        "    return passwords._HASHER\n"
    )
    found = list(imports_in(source, ROOT / "x.py"))
    assert {top(i.module) for i in found} == {"pytest", "cdap_audit", "cdap_dossiers", "cdap_identity"}
    assert {str(i.name) for i in found if private(i)} == {"_split", "_HASHER"}


@pytest.mark.parametrize("package", sorted(runtime_packages()))
def test_runtime_code_imports_no_other_service_and_no_test_library(package: str) -> None:
    folder = runtime_packages()[package]
    assert folder.is_dir(), folder
    # The CLI's sub-commands (`cdap identity ...`) call the services' public functions: it may import them.
    forbidden = set(SERVICE_PACKAGES) - {package} if package != "cdap_cli" else set()
    if package != "cdap_cli":
        forbidden |= {"cdap_cli", *CLI_LIBRARIES}
    wrong = [
        str(i) for i in imports_under(folder) if top(i.module) in forbidden or top(i.module) in TEST_LIBRARIES
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("folder", ["cli/src", "bench"])
def test_the_cli_and_the_benchmarks_use_only_public_names(folder: str) -> None:
    wrong = [str(i) for i in imports_under(ROOT / folder) if top(i.module).startswith("cdap_") and private(i)]
    assert not wrong, "\n".join(wrong)


# Test folders and the package whose private names each may use: the one it tests.
TEST_FOLDERS = {
    "tests": None,
    "testing/src": "cdap_testing",
    "shared/tests": "cdap_shared",
    "cli/tests": "cdap_cli",
    **{f"services/{s.name}/tests": s.package for s in SERVICES},
}


@pytest.mark.parametrize("folder", sorted(TEST_FOLDERS))
def test_tests_use_only_public_names_of_the_packages_they_do_not_test(folder: str) -> None:
    own = TEST_FOLDERS[folder]
    wrong = [
        str(i)
        for i in imports_under(ROOT / folder)
        if top(i.module).startswith("cdap_") and top(i.module) != own and private(i)
    ]
    assert not wrong, "\n".join(wrong)


def test_the_cli_imports_no_test_support() -> None:
    wrong = [str(i) for i in imports_under(ROOT / "cli/src") if top(i.module) in TEST_LIBRARIES]
    assert not wrong, "\n".join(wrong)


def dependencies(pyproject: Path) -> set[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    return {Requirement(r).name for r in project.get("dependencies", [])}


@pytest.mark.parametrize("member", ["shared", *(f"services/{s.name}" for s in SERVICES)])
def test_no_runtime_member_depends_on_another_service_or_on_test_support(member: str) -> None:
    declared = dependencies(ROOT / member / "pyproject.toml")
    services = {f"cdap-{s.name}" for s in SERVICES}
    own = tomllib.loads((ROOT / member / "pyproject.toml").read_text())["project"]["name"]
    assert not declared & (services - {own}), f"{member} depends on {declared & services}"
    assert not declared & (TEST_DISTRIBUTIONS | CLI_LIBRARIES | {"cdap-cli"}), (
        f"{member} depends on test, command-line or dev tooling"
    )


def installed_with(distribution: str) -> set[str]:
    """Every distribution uv.lock installs with `distribution` (extras asked for included)."""
    packages = {p["name"]: p for p in tomllib.loads((ROOT / "uv.lock").read_text())["package"]}
    seen: set[tuple[str, tuple[str, ...]]] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [(distribution, ())]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        package = packages[name]
        wanted = [*package.get("dependencies", [])]
        for extra in extras:
            wanted += package.get("optional-dependencies", {}).get(extra, [])
        todo += [(d["name"], tuple(d.get("extra", ()))) for d in wanted]
    found = {name for name, _ in seen} - {distribution}
    return found


def test_the_lock_walk_finds_what_the_cli_installs() -> None:
    """The check below can fail: the CLI's command-line libraries are found through the lock."""
    assert installed_with("cdap-cli") >= CLI_LIBRARIES


@pytest.mark.parametrize("service", [s.name for s in SERVICES])
def test_a_service_installs_only_what_it_runs_with(service: str) -> None:
    installed = installed_with(f"cdap-{service}")
    assert "fastapi" in installed  # the walk follows the lock (through cdap-shared)
    assert not installed & (TEST_DISTRIBUTIONS | CLI_LIBRARIES | {"cdap-cli"}), sorted(
        installed & (TEST_DISTRIBUTIONS | CLI_LIBRARIES | {"cdap-cli"})
    )


def test_test_support_comes_only_with_the_dev_group() -> None:
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "cdap-testing" not in {Requirement(r).name for r in root["project"]["dependencies"]}
    assert "cdap-testing" in {Requirement(r).name for r in root["dependency-groups"]["dev"]}
    assert "rich" not in dependencies(ROOT / "shared" / "pyproject.toml")


# Declared for what a service's framework does with it, never imported by the service's own code.
# FastAPI's form and upload parsing; Starlette's `Jinja2Templates`, which the portal renders with.
USED_THROUGH_THE_FRAMEWORK = {"python-multipart", "jinja2"}


def unused_dependencies(declared: set[str], imports: list[Import]) -> set[str]:
    """The declared distributions (canonical names) that no import of `imports` comes from."""
    providers = importlib.metadata.packages_distributions()
    used = {canonicalize_name(d) for i in imports for d in providers.get(top(i.module), [])}
    return {canonicalize_name(d) for d in declared} - used - USED_THROUGH_THE_FRAMEWORK


def test_the_unused_check_sees_a_dependency_nothing_imports() -> None:
    """The check below can fail: a declared distribution that no import names is reported."""
    found = list(imports_in("import orjson\n", ROOT / "x.py"))
    assert unused_dependencies({"orjson", "Faker", "python-multipart"}, found) == {"faker"}


@pytest.mark.parametrize("service", [s.name for s in SERVICES])
def test_a_service_declares_only_what_its_code_imports(service: str) -> None:
    package = next(s.package for s in SERVICES if s.name == service)
    declared = dependencies(ROOT / "services" / service / "pyproject.toml") - {"cdap-shared"}
    assert (
        unused_dependencies(declared, imports_under(ROOT / "services" / service / "src" / package)) == set()
    )


# Libraries that do I/O (a database, a broker, HTTP, templates, mail): a `domain.py` reaches none of
# them, directly or through the CDAP modules it imports.
IO_LIBRARIES = frozenset(
    (
        *("sqlalchemy", "sqlmodel", "asyncpg", "alembic", "aiokafka", "faststream", "prometheus_client"),
        *("httpx", "fastapi", "starlette", "uvicorn", "jinja2", "aiosmtplib", "smtplib", "socket"),
    )
)


def module_file(module: str) -> Path | None:
    """The source file of a CDAP runtime module (`cdap_shared.events` -> .../events.py), else None."""
    package, *rest = module.split(".")
    folder = runtime_packages().get(package)
    if folder is None:
        return None
    path = folder.joinpath(*rest)
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def reached_from(file: Path) -> dict[str, Import]:
    """Every outside top-level module `file` imports, directly or through the CDAP modules it imports
    (each with the import that brought it)."""
    seen: set[Path] = set()
    reached: dict[str, Import] = {}
    todo = [file]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for item in imports_in(current.read_text(), current):
            if top(item.module) in runtime_packages():
                names = [f"{item.module}.{item.name}", item.module] if item.name else [item.module]
                todo.extend(f for f in map(module_file, names) if f is not None)
            else:
                reached.setdefault(top(item.module), item)
    return reached


@pytest.mark.parametrize("service", [s.name for s in SERVICES])
def test_a_domain_module_reaches_no_io_library(service: str) -> None:
    package = next(s.package for s in SERVICES if s.name == service)
    reached = reached_from(runtime_packages()[package] / "domain.py")
    assert [str(i) for name, i in reached.items() if name in IO_LIBRARIES] == []


def test_the_domain_check_follows_cdap_imports(tmp_path: Path) -> None:
    """The check above can fail: an I/O library reached through a CDAP module is found."""
    domain = tmp_path / "domain.py"
    domain.write_text("from cdap_shared import db\n")
    assert "sqlalchemy" in reached_from(domain)
