"""The house's plan holds: `engine` never imports storage or front ends, and capabilities
import each other in one direction only (read from the source with `ast`)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "engine"

# Each capability may import the ones listed for it (and the shared modules at engine/).
MAY_IMPORT: dict[str, set[str]] = {
    "detection": set(),
    "alerting": {"detection"},
    "intake": {"detection", "alerting"},
    "answers": {"detection", "alerting"},
    "brief": {"detection", "alerting", "answers"},
}
SHARED = {
    "signal",
    "signal_fast",
    "ports",
    "errors",
    "text",
    "failpoints",
    "supervise",
    "chart",
    "demo",
    "metrics",
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return found


def capability_of(path: Path) -> str | None:
    parts = path.relative_to(ENGINE).parts
    return parts[0] if len(parts) > 1 else None


def test_engine_is_split_by_capability_with_nothing_left_loose() -> None:
    loose = {p.stem for p in ENGINE.glob("*.py")} - SHARED - {"__init__"}
    assert loose == set(), f"engine/ modules that belong in a capability package: {sorted(loose)}"
    assert {p.name for p in ENGINE.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(MAY_IMPORT)
    for package in MAY_IMPORT:
        init = ENGINE / package / "__init__.py"
        assert ast.get_docstring(ast.parse(init.read_text())), f"{package} does not say what it owns"


def test_capabilities_import_each_other_in_one_direction() -> None:
    wrong = []
    for path in sorted(ENGINE.rglob("*.py")):
        mine = capability_of(path)
        for line, module in imported_modules(path):
            top, _, rest = module.partition(".")
            where = f"{path.relative_to(ROOT)}:{line} imports {module}"
            if top in {"storage", "bot"}:
                wrong.append(f"{where} (engine must not depend on adapters or front ends)")
            if top != "engine" or not rest:
                continue
            theirs = rest.split(".", 1)[0]
            # Shared modules (the ports name the record's types) may use any capability's types.
            if mine is None or theirs in SHARED or theirs == mine:
                continue
            if theirs not in MAY_IMPORT[mine]:
                wrong.append(where)
    assert wrong == [], "\n".join(wrong)


def test_the_check_sees_a_wrong_way_import(tmp_path: Path) -> None:
    """The walker is not vacuous: an alerting module importing answers is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("from engine.answers.answer import Answer\nimport storage.sqlite\n")
    assert [m for _, m in imported_modules(bad)] == ["engine.answers.answer", "storage.sqlite"]


# Functions allowed past LONGEST lines, and why.
LONG_ON_PURPOSE = {
    # The per-point hot path: compiled with mypyc, where a call per step costs what it saves.
    "engine/detection/ensemble.py:observe",
}
LONGEST = 65


def test_functions_stay_short_enough_to_read_in_one_screen() -> None:
    long = []
    for package in ("engine", "bot", "storage"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = (node.end_lineno or node.lineno) - node.lineno + 1
                    where = f"{path.relative_to(ROOT)}:{node.name}"
                    if lines > LONGEST and where not in LONG_ON_PURPOSE:
                        long.append(f"{where} is {lines} lines")
    assert long == [], "\n".join(long)
