"""Every code block in README.md, CONTRIBUTING.md and docs/*.md is checked, so none can rot.

* ```python blocks run in order, one namespace per file, in a temporary working
  directory (a later block may use names and files from an earlier one).
* ```bash blocks: every repository path they name (scripts/..., tests/..., ...)
  must exist; the cheap commands in them (`python -c ...`, `mamext ... --help`)
  run; a block preceded by `<!-- doctest: run -->` runs whole, with bash, in
  the same working directory as the file's Python blocks.
* ```text blocks (program output, layouts) and other languages are not run.
* A block preceded by `<!-- doctest: skip-until-merge -->` needs an API that is
  not merged yet: it fails the test unless MAMEXT_DOCS_ALLOW_PENDING=1 is set,
  so the marker cannot outlive the merge unnoticed.
* Relative links (and their #anchors) must point at existing files and headings.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import mamext
import mamext.prune

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
LANGUAGES = {"python", "bash", "text", "c"}
PENDING_ENV = "MAMEXT_DOCS_ALLOW_PENDING"
REPO_DIRS = ("scripts", "benchmarks", "tests", "csrc", "python", "cmake", "docs", "build_support", ".ci")
REPO_PATH = re.compile(r"(?<![\w./-])((?:%s)/[\w./-]*[\w])" % "|".join(re.escape(d) for d in REPO_DIRS))
FENCE = re.compile(r"^\s*```(\S*)\s*$")
MARKER = re.compile(r"^<!--\s*doctest:\s*([\w-]+)\s*-->$")
MARKERS = {"run": {"bash"}, "skip-until-merge": {"python", "bash"}}  # marker -> languages it applies to
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    marker: str | None

    @property
    def where(self) -> str:
        return f"{doc_id(self.path)}:{self.line}"


def parse_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, with the doctest marker right before each."""
    blocks, lines = [], path.read_text().splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip().startswith("```")), None)
        assert end is not None, f"{doc_id(path)}:{i + 1}: code block never closed"
        previous = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.match(previous)
        code = textwrap.dedent("\n".join(lines[i + 1:end])) + "\n"
        blocks.append(Block(path, i + 1, opening.group(1), code, marker.group(1) if marker else None))
        i = end + 1
    return blocks


def prose_lines(path: Path) -> list[str]:
    """The lines of a Markdown file outside its code blocks."""
    lines, inside = [], False
    for line in path.read_text().splitlines():
        if FENCE.match(line) or (inside and line.strip().startswith("```")):
            inside = not inside
        elif not inside:
            lines.append(line)
    return lines


def subprocess_env() -> dict:
    """The environment of the shell commands: this interpreter first on PATH, this mamext importable."""
    env = dict(os.environ)
    package_root = str(Path(mamext.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    env["OMP_NUM_THREADS"] = "1"
    return env


def shell_commands(code: str) -> list[list[str]]:
    """The commands of a bash block, one argv per line (continuations joined, comments dropped)."""
    joined = re.sub(r"\\\n", " ", code)
    return [argv for argv in (shlex.split(line, comments=True) for line in joined.splitlines()) if argv]


def cheap_command(argv: list[str]) -> tuple[list[str], dict] | None:
    """(argv, environment overrides) for a command that is cheap and safe to run here, or None.

    Leading `NAME=value` assignments apply, except PYTHONPATH: the test points
    it at the mamext under test itself.
    """
    argv, assignments = list(argv), {}
    while argv and re.fullmatch(r"[A-Za-z_]\w*=.*", argv[0]):
        name, _, value = argv.pop(0).partition("=")
        assignments[name] = value
    assignments.pop("PYTHONPATH", None)
    command = _cheap_argv(argv) if argv else None
    return None if command is None else (command, assignments)


def _cheap_argv(argv: list[str]) -> list[str] | None:
    if argv[0] in ("python", "python3") and len(argv) >= 3 and argv[1] == "-c":
        return [sys.executable, *argv[1:]]
    if argv[0] == "mamext" and "--help" in argv:
        return [sys.executable, "-m", "mamext", *argv[1:]]
    if argv[:3] in (["python", "-m", "mamext"], ["python3", "-m", "mamext"]) and "--help" in argv:
        return [sys.executable, *argv[1:]]
    return None


def run_python(block: Block, namespace: dict) -> None:
    exec(compile(block.code, block.where, "exec"), namespace)


def run_bash(block: Block, cwd: Path) -> None:
    for path in REPO_PATH.findall(block.code):
        assert (ROOT / path).exists(), f"{block.where}: names {path}, which does not exist"
    if block.marker == "run":
        commands = [(["bash", "-euo", "pipefail", "-c", block.code], {})]
    else:
        commands = [c for c in map(cheap_command, shell_commands(block.code)) if c is not None]
    for argv, assignments in commands:
        env = {**subprocess_env(), **assignments}
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (
            f"{block.where}: {shlex.join(argv)} exited with {done.returncode}\n{done.stdout}\n{done.stderr}")


def run_blocks(blocks: list[Block], cwd: Path) -> list[str]:
    """Run (or check) the blocks of one file in order; returns where the pending ones are.

    One torch thread: the examples are tiny, and OpenMP threads competing with
    other processes would only slow them down. The random generators, the
    thread count, the environment variables and the pruning score registry
    are restored afterwards.
    """
    threads, environment, scores = torch.get_num_threads(), dict(os.environ), registered_scores()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            return _run_blocks(blocks, cwd)
    finally:
        torch.set_num_threads(threads)
        os.environ.clear()
        os.environ.update(environment)
        for name in registered_scores() - scores:
            mamext.prune.unregister_score(name)


def registered_scores() -> set[str]:
    """The names in the pruning score registry (empty where there is none)."""
    score_names = getattr(mamext.prune, "score_names", None)
    return set(score_names()) if score_names else set()


def _run_blocks(blocks: list[Block], cwd: Path) -> list[str]:
    namespace = {"__name__": "__docs__"}
    pending = []
    for block in blocks:
        assert block.language in LANGUAGES, (
            f"{block.where}: code block language {block.language!r}; use one of {sorted(LANGUAGES)} "
            f"(program output is ```text)")
        assert block.marker is None or block.language in MARKERS.get(block.marker, ()), (
            f"{block.where}: marker {block.marker!r} does not apply to a {block.language!r} block")
        if block.marker == "skip-until-merge":
            pending.append(block.where)
            continue
        if block.language == "python":
            run_python(block, namespace)
        elif block.language == "bash":
            run_bash(block, cwd)
    return pending


def fail_on_pending(pending: list[str]) -> None:
    if pending and os.environ.get(PENDING_ENV) != "1":
        pytest.fail(f"blocks marked skip-until-merge (set {PENDING_ENV}=1 to allow them until the merge): "
                    + ", ".join(pending))


def doc_id(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


@pytest.mark.parametrize("path", DOC_FILES, ids=doc_id)
def test_code_blocks(path, tmp_path, monkeypatch):
    assert path.exists(), f"{doc_id(path)} is missing"
    blocks = parse_blocks(path)
    markers = sum(bool(MARKER.match(line.strip())) for line in prose_lines(path))
    assert markers == sum(b.marker is not None for b in blocks), (
        f"{doc_id(path)}: a doctest marker must come right before a code block")
    monkeypatch.chdir(tmp_path)
    fail_on_pending(run_blocks(blocks, tmp_path))


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {github_anchor(line.lstrip("#")) for line in prose_lines(path) if line.startswith("#")}


@pytest.mark.parametrize("path", DOC_FILES, ids=doc_id)
def test_links(path):
    for target in LINK.findall("\n".join(prose_lines(path))):
        if re.match(r"[a-z]+:", target):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        assert linked.exists(), f"{doc_id(path)}: link to {target}: no such file"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{doc_id(path)}: link to {target}: no such heading"


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines < 200, f"README.md has {lines} lines; move details to docs/"


def test_pending_marker_fails_unless_allowed(tmp_path, monkeypatch):
    doc = tmp_path / "doc.md"
    doc.write_text("text\n\n<!-- doctest: skip-until-merge -->\n```python\nraise SystemExit(1)\n```\n")
    pending = run_blocks(parse_blocks(doc), tmp_path)
    assert pending == [f"{doc}:4"]
    monkeypatch.delenv(PENDING_ENV, raising=False)
    with pytest.raises(pytest.fail.Exception, match="skip-until-merge"):
        fail_on_pending(pending)
    monkeypatch.setenv(PENDING_ENV, "1")
    fail_on_pending(pending)


def test_failing_block_names_its_line(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("# t\n\n```python\nx = 1\n```\n\n```python\nassert x == 2\n```\n")
    with pytest.raises(AssertionError) as failure:
        run_blocks(parse_blocks(doc), tmp_path)
    assert f"{doc}:7" in [frame.filename for frame in traceback.extract_tb(failure.value.__traceback__)]


def test_only_cheap_commands_run():
    assert cheap_command(shlex.split("pip install --no-build-isolation .")) is None
    assert cheap_command(shlex.split("bash scripts/setup.sh")) is None
    assert cheap_command(shlex.split("mamext experiment --quick")) is None
    assert cheap_command(shlex.split("mamext experiment --help")) == (
        [sys.executable, "-m", "mamext", "experiment", "--help"], {})
    assert cheap_command(shlex.split("PYTHONPATH=python MAMEXT_CPU_CAPABILITY=avx2 python -c 'import mamext'")) == (
        [sys.executable, "-c", "import mamext"], {"MAMEXT_CPU_CAPABILITY": "avx2"})
