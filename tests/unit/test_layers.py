"""The import layers of pyproject.toml's ``[tool.importlinter]`` hold (docs/architecture.md).

import-linter builds the import graph of ``manager``, ``worker`` and ``docserver``
and checks every contract: the manager's layers point down, the worker and the
docserver import neither other package, the store backends and the event sources
do not import each other.
"""

from __future__ import annotations

from pathlib import Path

from importlinter import cli

ROOT = Path(__file__).resolve().parents[2]


def test_every_import_contract_is_kept(tmp_path: Path) -> None:
    exit_code = cli.lint_imports(
        config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True
    )
    assert exit_code == 0, "lint-imports found an import that breaks a layer (see its report above)"
