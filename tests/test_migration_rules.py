"""Migrations expand first and contract a release later (docs/upgrades.md): a migration's ``upgrade()``
may not drop, rename or tighten what the previous release's code uses unless it declares itself a
contract step that completes an earlier expand."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from labcloud.db.migrate import MIGRATIONS_DIR

VERSIONS = MIGRATIONS_DIR / "versions"
# Released while every installation ran one server (expand and contract shipped together): exempt.
BEFORE_THE_RULE = {"0010", "0015"}
CONTRACT_CALLS = {"drop_column", "drop_table", "drop_constraint", "rename_table", "drop_table_comment"}
CONTRACT_SQL = re.compile(
    r"\b(DROP\s+(TABLE|COLUMN|CONSTRAINT)|RENAME\s+(TO|COLUMN)|SET\s+NOT\s+NULL|ALTER\s+COLUMN\s+\w+\s+TYPE)\b",
    re.IGNORECASE,
)


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_false(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is False


def _call_name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _strings(node: ast.AST) -> str:
    return " ".join(
        n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    )


def contract_steps(source: str) -> list[str]:
    """What ``upgrade()`` in a migration's ``source`` does that only a contract step may do, in words."""
    tree = ast.parse(source)
    upgrade = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "upgrade"), None)
    assert upgrade is not None, "a migration without upgrade()"
    found: list[str] = []
    for node in ast.walk(upgrade):
        if not isinstance(node, ast.Call):
            continue
        name = _call_name(node)
        line = f"line {node.lineno}"
        if name in CONTRACT_CALLS:
            found.append(f"{line}: {name}")
        elif name == "alter_column":
            if _is_false(_keyword(node, "nullable")):
                found.append(f"{line}: alter_column(nullable=False)")
            for what in ("new_column_name", "type_"):
                if _keyword(node, what) is not None:
                    found.append(f"{line}: alter_column({what}=...)")
        elif name == "add_column":
            column = next(
                (a for a in node.args if isinstance(a, ast.Call) and _call_name(a) == "Column"), None
            )
            if (
                column is not None
                and _is_false(_keyword(column, "nullable"))
                and _keyword(column, "server_default") is None
            ):
                found.append(f"{line}: add_column of a NOT NULL column without a server_default")
        elif name == "execute" and CONTRACT_SQL.search(_strings(node)):
            found.append(
                f"{line}: SQL that drops, renames or tightens: {CONTRACT_SQL.search(_strings(node))[0]!r}"
            )
    return found


def declared_contract(source: str) -> dict[str, str] | None:
    """The module's ``CONTRACT = {"expand": REVISION, "why": ...}``, if any."""
    for node in ast.parse(source).body:
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AnnAssign)
            else []
        )
        if any(isinstance(t, ast.Name) and t.id == "CONTRACT" for t in targets):
            assert isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None
            value = ast.literal_eval(node.value)
            assert isinstance(value, dict), "CONTRACT must be a dict with expand and why"
            return {str(k): str(v) for k, v in value.items()}
    return None


def _revisions() -> dict[str, tuple[str | None, Path]]:
    """revision -> (down_revision, file)."""
    out: dict[str, tuple[str | None, Path]] = {}
    for path in sorted(VERSIONS.glob("*.py")):
        values: dict[str, str | None] = {}
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.AnnAssign | ast.Assign):
                target = node.target if isinstance(node, ast.AnnAssign) else node.targets[0]
                if isinstance(target, ast.Name) and target.id in ("revision", "down_revision") and node.value:
                    values[target.id] = ast.literal_eval(node.value)
        revision = values.get("revision")
        assert revision, f"{path.name} names no revision"
        out[revision] = (values.get("down_revision"), path)
    return out


def _ancestors(revisions: dict[str, tuple[str | None, Path]], revision: str) -> set[str]:
    seen: set[str] = set()
    down = revisions[revision][0]
    while down is not None and down not in seen:
        seen.add(down)
        down = revisions[down][0] if down in revisions else None
    return seen


def violations(revisions: dict[str, tuple[str | None, Path]]) -> list[str]:
    problems = []
    for revision, (_down, path) in sorted(revisions.items()):
        if revision in BEFORE_THE_RULE:
            continue
        source = path.read_text()
        steps = contract_steps(source)
        if not steps:
            continue
        contract = declared_contract(source)
        if contract is None:
            problems.append(f"{path.name} contracts without declaring CONTRACT: {'; '.join(steps)}")
        elif contract.get("expand") not in _ancestors(revisions, revision) or not contract.get("why"):
            problems.append(
                f"{path.name}: CONTRACT must name an earlier revision as its expand and say why ({contract})"
            )
    return problems


def test_every_migration_expands_or_declares_its_contract() -> None:
    revisions = _revisions()
    assert len(revisions) >= 24
    assert violations(revisions) == []


EXPAND = """
revision = "0100"
down_revision = "0099"
def upgrade():
    with op.batch_alter_table("jobs") as b:
        b.add_column(sa.Column("note", sa.Text(), nullable=True))
        b.add_column(sa.Column("n", sa.Integer(), nullable=False, server_default="0"))
    op.create_table("things", sa.Column("id", sa.Integer(), nullable=False))
def downgrade():
    op.drop_table("things")
"""


@pytest.mark.parametrize(
    ("body", "found"),
    [
        ('op.drop_column("jobs", "note")', "drop_column"),
        ('b.alter_column("note", existing_type=sa.Text(), nullable=False)', "nullable=False"),
        ('b.alter_column("note", new_column_name="memo")', "new_column_name"),
        ('b.add_column(sa.Column("m", sa.Integer(), nullable=False))', "without a server_default"),
        ('op.execute("ALTER TABLE jobs DROP COLUMN note")', "DROP COLUMN"),
        ('op.execute("ALTER TABLE jobs ALTER COLUMN note SET NOT NULL")', "SET NOT NULL"),
        ('op.rename_table("jobs", "runs")', "rename_table"),
    ],
)
def test_the_rule_finds_each_contract_step(body: str, found: str, tmp_path: Path) -> None:
    source = EXPAND.replace("def downgrade", f"    {body}\ndef downgrade")
    steps = contract_steps(source)
    assert len(steps) == 1 and found in steps[0], steps
    assert contract_steps(EXPAND) == []  # the downgrade's drop does not count

    def chain(text: str) -> dict[str, tuple[str | None, Path]]:
        (tmp_path / "0100_x.py").write_text(text)
        (tmp_path / "0099_y.py").write_text(EXPAND)  # (only what its upgrade() does is read)
        return {"0099": ("0098", tmp_path / "0099_y.py"), "0100": ("0099", tmp_path / "0100_x.py")}

    assert len(violations(chain(source))) == 1
    declared = 'CONTRACT = {"expand": "0099", "why": "note unused since 0099"}\n' + source
    assert violations(chain(declared)) == []
    not_earlier = 'CONTRACT = {"expand": "0100", "why": "itself"}\n' + source
    assert "earlier revision" in violations(chain(not_earlier))[0]
