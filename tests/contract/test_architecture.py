"""Dependencies point one way (DESIGN.md section 2): checked on every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "flou_grpc"


def _imports(path: Path) -> set[str]:
    """Every module a file imports, absolute, at any depth of the file (lazy imports too)."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def _modules() -> dict[str, set[str]]:
    return {
        str(path.relative_to(PACKAGE.parent)): _imports(path)
        for path in sorted(PACKAGE.rglob("*.py"))
        if "_proto" not in path.parts
    }


def _importing(prefixes: tuple[str, ...]) -> set[str]:
    return {
        module
        for module, imports in _modules().items()
        if any(name == p or name.startswith(p + ".") for name in imports for p in prefixes)
    }


@pytest.mark.parametrize(
    ("dependency", "allowed"),
    [
        # Only the store talks to the database.
        (("sqlalchemy", "psycopg", "alembic"), ("flou_grpc/store/",)),
        # Only the service speaks gRPC and protobuf.
        (("grpc", "grpc_health", "grpc_reflection", "grpc_status"), ("flou_grpc/service/",)),
        (("flou_grpc._proto", "google.protobuf", "google.rpc"), ("flou_grpc/service/",)),
        # Metrics are the service's business; the runtime reports through an Observer.
        (("prometheus_client",), ("flou_grpc/service/",)),
        # Nothing depends on the service but the entry points.
        (("flou_grpc.service",), ("flou_grpc/service/", "flou_grpc/cli/")),
    ],
)
def test_dependency_is_imported_only_where_allowed(dependency, allowed):
    offenders = {m for m in _importing(dependency) if not m.startswith(allowed)}
    assert offenders == set()


def test_engine_is_pure():
    """The engine does no I/O and knows no infrastructure: only itself and the errors."""
    forbidden = (
        "grpc",
        "google",
        "sqlalchemy",
        "psycopg",
        "tenacity",
        "flou_grpc.store",
        "flou_grpc.runtime",
        "flou_grpc.orchestrator",
        "flou_grpc.service",
        "flou_grpc._proto",
        "flou_grpc.cli",
        "flou_grpc.config",
    )
    engine = {m for m in _importing(forbidden) if m.startswith("flou_grpc/engine/")}
    assert engine == set()


def test_import_scanner_sees_relative_and_lazy_imports():
    # The rules above are only as good as the scanner: check it on the real CLI,
    # whose import of the server happens inside a function.
    assert "flou_grpc.service.server" in _imports(PACKAGE / "cli" / "serving.py")
    assert "flou_grpc.errors" in _imports(PACKAGE / "service" / "status.py")
