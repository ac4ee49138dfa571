"""Every benchmark states the CPU's ISA beside its figures, from the one shared description (ops/machine.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parent.parent / "tools"


def imported_from_ops_machine(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module == "ops.machine"
            for alias in node.names}


@pytest.mark.parametrize("tool", sorted(TOOLS.glob("bench_*.py")), ids=lambda p: p.name)
def test_every_benchmark_takes_its_machine_line_from_ops_machine(tool):
    names = imported_from_ops_machine(tool)
    assert names & {"machine_description", "isa_line"}, f"{tool.name} does not print ops.machine's ISA line"
