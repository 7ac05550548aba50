#!/usr/bin/env python3
"""Patch the reana-client installed in a virtualenv so that `reana-client logs --follow`
reads reana-log-sse's live stream (reana-client.patch, beside this file).

    python integrations/reana-client/apply.py --venv VENV

Only the patch's files under `reana_client/` are applied (its tests are for reana-client's
own repository). Running it again on a patched venv changes nothing. Any reana-client
version other than those listed in KNOWN_VERSIONS is refused. Standard library only.
Exit status: 0 patched or already patched, 1 the venv or its files are not as expected,
2 usage.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

PATCH = Path(__file__).resolve().with_name("reana-client.patch")
KNOWN_VERSIONS = ("0.95.0a6",)


@dataclasses.dataclass
class FilePatch:
    path: str  # relative to site-packages, e.g. reana_client/cli/utils.py
    new_file: bool
    hunks: list[tuple[list[str], list[str]]]  # (old lines, new lines), with context


class PatchError(Exception):
    pass


def parse_patch(text: str) -> list[FilePatch]:
    """A unified diff (git format) as one FilePatch per file."""
    files: list[FilePatch] = []
    current: FilePatch | None = None
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("--- "):
            source = line[4:].strip()
            target = lines[i + 1][4:].strip()
            path = target[2:] if target.startswith("b/") else target
            current = FilePatch(path, source == "/dev/null", [])
            files.append(current)
            i += 2
            continue
        if line.startswith("@@") and current is not None:
            old: list[str] = []
            new: list[str] = []
            i += 1
            while i < len(lines) and lines[i][:1] in (" ", "-", "+", "\\"):
                body = lines[i]
                if body.startswith("\\"):  # "\ No newline at end of file"
                    for block in (old, new):
                        if block and block[-1].endswith("\n"):
                            block[-1] = block[-1][:-1]
                elif body.startswith(" "):
                    old.append(body[1:])
                    new.append(body[1:])
                elif body.startswith("-"):
                    old.append(body[1:])
                else:
                    new.append(body[1:])
                i += 1
            current.hunks.append((old, new))
            continue
        i += 1
    return files


def patched_text(fp: FilePatch, text: str | None) -> tuple[str, bool]:
    """The file's text once patched, and whether it already was."""
    if fp.new_file:
        wanted = "".join(fp.hunks[0][1]) if fp.hunks else ""
        return wanted, text == wanted
    if text is None:
        raise PatchError(f"{fp.path} is missing")
    applied = ["".join(new) in text for _, new in fp.hunks]
    if all(applied):
        return text, True
    if any(applied):
        raise PatchError(f"{fp.path} is partly patched; reinstall reana-client")
    for old, new in fp.hunks:
        before = "".join(old)
        if text.count(before) != 1:
            raise PatchError(f"{fp.path} is not as reana-client's release has it (a hunk "
                             "does not match exactly once); reinstall reana-client")
        text = text.replace(before, "".join(new))
    return text, False


def installed(venv: Path) -> tuple[str, Path]:
    """reana-client's version and the directory holding its package, in the venv."""
    python = venv / "bin" / "python"
    if not python.exists():
        raise PatchError(f"{venv} is not a virtualenv (no bin/python)")
    probe = ("import importlib.metadata as m, importlib.util as u, json, os\n"
             "s = u.find_spec('reana_client')\n"
             "print(json.dumps([m.version('reana-client'),"
             " os.path.dirname(os.path.dirname(s.origin))]))")
    run = subprocess.run([str(python), "-c", probe], capture_output=True, text=True,
                         timeout=120)
    if run.returncode != 0:
        raise PatchError(f"reana-client is not installed in {venv}")
    version, where = json.loads(run.stdout.strip().splitlines()[-1])
    return version, Path(where)


def apply(venv: Path) -> str:
    version, site = installed(venv)
    if version not in KNOWN_VERSIONS:
        raise PatchError(f"reana-client {version} is installed in {venv}; this patch is "
                         f"for reana-client {', '.join(KNOWN_VERSIONS)} only")
    files = [f for f in parse_patch(PATCH.read_text(encoding="utf-8"))
             if f.path.startswith("reana_client/")]
    results = []
    for fp in files:  # check every file before writing any
        target = site / fp.path
        text = target.read_text(encoding="utf-8") if target.exists() else None
        results.append((target, *patched_text(fp, text)))
    if all(done for _, _, done in results):
        return f"reana-client {version} in {venv} is already patched"
    for target, text, done in results:
        if not done:
            target.write_text(text, encoding="utf-8")
    return f"patched reana-client {version} in {venv} ({len(results)} files)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", required=True, type=Path,
                        help="the virtualenv where reana-client is installed")
    args = parser.parse_args(argv)
    try:
        print(apply(args.venv.resolve()))
    except PatchError as exc:
        print(f"apply.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
