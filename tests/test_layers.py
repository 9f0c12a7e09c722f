"""Which packages may import which (docs/architecture.md): read from the source with ``ast``, so a rule is
broken by the import statement itself, wherever it stands (a function, a TYPE_CHECKING block).

The two HTTP faces, the JSON API (``labcloud.api``) and the pages (``labcloud.web``), share what they have
in common through ``labcloud.http`` below both; the command line goes through the runtime and the client.
Only the server's entry point (``labcloud serve``) builds the ASGI application, and so imports the API.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import labcloud

SRC = Path(labcloud.__file__).parent
# (importing module, imported module, name): the process entry builds the application
ALLOWED = {("labcloud.cli.server", "labcloud.api.app", "create_app")}
RULES: dict[str, tuple[str, ...]] = {  # a package: the packages it must not import
    "labcloud.web": ("labcloud.api",),
    "labcloud.cli": ("labcloud.api",),
    "labcloud.http": ("labcloud.api", "labcloud.web"),
    "labcloud.services": ("labcloud.api", "labcloud.web", "labcloud.http"),
    "labcloud.execution": ("labcloud.api", "labcloud.web", "labcloud.http"),
}


@dataclass(frozen=True)
class Import:
    module: str  # the module that imports
    target: str  # what it imports: a module, or a name of one (``from m import n``: ``m.n``)
    origin: str  # the module the statement names (``m``)
    name: str | None  # the name it takes from it (``from m import n``), else None
    line: int

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.target}"


def module_name(path: Path, root: Path = SRC) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(source: str, module: str, is_package: bool = False) -> list[Import]:
    """Every import statement of a module's source, relative ones made absolute."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(module, a.name, a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            origin = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join([*base, *([origin] if origin else [])])
            for alias in node.names:
                found.append(Import(module, f"{origin}.{alias.name}", origin, alias.name, node.lineno))
    return found


def inside(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def breaks(found: list[Import]) -> list[str]:
    out = []
    for imp in found:
        if (imp.module, imp.origin, imp.name) in ALLOWED:
            continue
        for package, forbidden in RULES.items():
            if not inside(imp.module, package):
                continue
            out += [f"{imp} ({package} must not import {f})" for f in forbidden if inside(imp.target, f)]
    return out


def source_imports() -> list[Import]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        found += imports(path.read_text(), module_name(path), path.name == "__init__.py")
    return found


def test_the_layers_import_only_downwards() -> None:
    found = source_imports()
    assert len({imp.module for imp in found}) > 100  # the whole package was read
    problems = breaks(found)
    assert not problems, "imports across the layers:\n" + "\n".join(problems)


def test_the_allowed_import_is_still_there() -> None:
    """The one exception names a real import: when it goes, the exception goes too."""
    found = source_imports()
    assert {(i.module, i.origin, i.name) for i in found} >= ALLOWED


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("labcloud.web.routes.jobs", "from labcloud.api.routers import jobs\n"),
        ("labcloud.web.deps", "import labcloud.api.guard\n"),
        ("labcloud.web.deps", "from labcloud import api\n"),
        ("labcloud.web.routes.files", "from ...api.downloads import send_file\n"),
        ("labcloud.web.routes.files", "def f():\n    from labcloud.api.downloads import send_zip\n"),
        ("labcloud.cli.admin", "from labcloud.api.app import create_app\n"),
        ("labcloud.cli.server", "from labcloud.api.errors import problem\n"),
        ("labcloud.http.guard", "from labcloud.web.deps import PageRoute\n"),
        ("labcloud.services.jobs", "if TYPE_CHECKING:\n    import labcloud.web\n"),
        ("labcloud.execution.runner", "from labcloud.api import deps\n"),
        ("labcloud.execution.executors.pull", "from labcloud.http.downloads import send_file\n"),
    ],
)
def test_each_form_of_a_forbidden_import_is_found(module: str, source: str) -> None:
    assert len(breaks(imports(source, module))) == 1


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("labcloud.cli.server", "def serve():\n    from labcloud.api.app import create_app\n"),
        ("labcloud.web.deps", "from labcloud.http.guard import GuardedRoute\n"),
        ("labcloud.api.routers.jobs", "from labcloud.http.downloads import send_file\n"),
        ("labcloud.web.routes.apps", "from labcloud import runtime\n"),
        ("labcloud.webhooks", "import labcloud.api\n"),  # not the web package: only its name begins alike
    ],
)
def test_imports_the_rules_allow_pass(module: str, source: str) -> None:
    assert breaks(imports(source, module)) == []
