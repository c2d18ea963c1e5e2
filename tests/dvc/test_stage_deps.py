"""Every DVC stage depends on all the code its `facesr <verb>` runs: the import closure of the verb, read from the
source (ast), covered by the stage's deps (the file or a folder above it)."""

from __future__ import annotations

import ast
import inspect
import re
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
GLOBAL_OPTIONS = {"--params", "--profile", "--set"}  # take a value


def module_file(name: str) -> Path | None:
    """The file of module ``name`` (``facesr.x.y``) under src/, or None when it is not a module of ours."""
    base = SRC.joinpath(*name.split("."))
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.is_file():
            return f
    return None


def module_name(f: Path) -> str:
    parts = f.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(nodes: list[ast.AST], here: str, is_package: bool) -> set[str]:
    """The facesr modules the import statements among ``nodes`` (and inside them) load: each module, every package
    above it, and for ``from M import x`` the submodule ``M.x`` when there is one."""
    names: set[str] = set()
    bases: set[str] = set()  # what must be a module: `import M`, the M of `from M import x`
    for top in nodes:
        for n in ast.walk(top):
            if isinstance(n, ast.Import):
                names.update(a.name for a in n.names)
                bases.update(a.name for a in n.names)
            elif isinstance(n, ast.ImportFrom):
                if n.level:
                    pkg = here.split(".") if is_package else here.split(".")[:-1]
                    base = ".".join(pkg[: len(pkg) - n.level + 1] + ([n.module] if n.module else []))
                else:
                    base = n.module or ""
                names.add(base)
                bases.add(base)
                names.update(f"{base}.{a.name}" for a in n.names)
    out: set[str] = set()
    for name in names:
        parts = name.split(".")
        if parts[0] != "facesr":
            continue
        if name in bases and not module_file(name):
            raise AssertionError(f"{here}: imports {name}, which is no module under src/ (a moved file?)")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a, a.b and a.b.c
            if module_file(".".join(parts[:i])):
                out.add(".".join(parts[:i]))
    return out


def closure(start: set[str], shallow: frozenset[str] = frozenset()) -> set[Path]:
    """The files of ``start`` and of every facesr module they import, at any depth (function-local imports too);
    the modules in ``shallow`` are not read again (their imports are already in ``start``)."""
    seen: set[str] = set()
    todo = list(start)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name not in shallow:
            f = module_file(name)
            tree = ast.parse(f.read_text(encoding="utf-8"))
            todo.extend(imported([tree], name, f.name == "__init__.py") - seen)
    return {module_file(n) for n in seen}


def verb_closure(verb: list[str]) -> set[Path]:
    start, mod = verb_start(verb)
    return closure(start, frozenset({mod}))


def verb_start(verb: list[str]) -> tuple[set[str], str]:
    """What `facesr VERB` loads first: the CLI group's module, the verb's module at its top level, and the imports
    inside the verb's function and the functions of its module it calls (the core module it runs)."""
    from facesr.cli.main import cli

    cmd = cli
    for word in verb:
        cmd = cmd.commands[word]
    func = inspect.unwrap(cmd.callback)
    mod = func.__module__
    f = module_file(mod)
    tree = ast.parse(f.read_text(encoding="utf-8"))
    defs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    top = [n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    bodies, todo = [], [func.__name__]
    while todo:
        fn = defs.get(todo.pop())
        if fn is None or fn in bodies:
            continue
        bodies.append(fn)
        todo += [c.func.id for c in ast.walk(fn) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)]
    return {"facesr.cli.main", mod} | imported(top + bodies, mod, f.name == "__init__.py"), mod


def facesr_verbs(cmd: str) -> list[list[str]]:
    """Each `facesr [GLOBAL OPTIONS] VERB [SUBVERB]` in a stage command (the words up to the first option)."""
    words = shlex.split(cmd.replace("&&", " && ").replace(">", " > "))
    out = []
    for i, w in enumerate(words):
        if w != "facesr":
            continue
        j = i + 1
        while j < len(words) and words[j].startswith("--"):
            j += 2 if words[j] in GLOBAL_OPTIONS else 1
        verb = []
        while j < len(words) and re.fullmatch(r"[a-z]+", words[j]):
            verb.append(words[j])
            j += 1
        out.append(verb)
    return out


def stages() -> dict[str, dict]:
    raw = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: s.get("do", s) for name, s in raw.items()}


def command_words(verb: list[str]) -> list[str]:
    """The words of ``verb`` that name click commands (`params resolve` -> both; `ingest --out` -> ingest)."""
    from facesr.cli.main import cli

    cmd, out = cli, []
    for w in verb:
        if not hasattr(cmd, "commands") or w not in cmd.commands:
            break
        cmd = cmd.commands[w]
        out.append(w)
    return out


@pytest.mark.parametrize("stage", list(stages()))
def test_stage_deps_cover_the_code_its_verb_runs(stage):
    body = stages()[stage]
    verbs = facesr_verbs(body["cmd"])
    assert verbs, f"stage {stage}: no facesr verb in {body['cmd']!r}"
    deps = [REPO / d for d in body.get("deps", []) if isinstance(d, str)]
    runs = set().union(*(verb_closure(command_words(verb)) for verb in verbs))
    uncovered = sorted(str(f.relative_to(REPO)) for f in runs if not any(f == d or d in f.parents for d in deps))
    assert not uncovered, f"stage {stage} (facesr {' '.join(verbs[0])}) runs code it does not depend on: " \
                          f"add to its deps: {uncovered}"
    # and no code dep it does not run (a change there would re-run the stage for nothing)
    code = [d for d in deps if SRC in d.parents and d.suffix == ".py" or d.is_dir() and SRC in d.parents
            and any(d.rglob("*.py"))]
    unused = sorted(str(d.relative_to(REPO)) for d in code if not any(f == d or d in f.parents for f in runs))
    assert not unused, f"stage {stage}: deps on code its verb does not import: {unused}"


def test_the_closure_follows_function_local_and_relative_imports():
    """The walk itself: the evaluate verb imports facesr.evaluate inside its function, which needs the models."""
    files = {str(f.relative_to(SRC)) for f in verb_closure(["evaluate"])}
    assert {"facesr/cli/evaluate.py", "facesr/evaluate.py", "facesr/config.py", "facesr/__init__.py",
            "facesr/cli/main.py", "facesr/cli/common.py"} <= files
    assert any(f.startswith("facesr/models/") for f in files) and any(f.startswith("facesr/metrics/") for f in files)
    assert "facesr/kfp/pipeline.py" not in files and "facesr/data/ingest.py" not in files  # only what it runs
    ingest = {str(f.relative_to(SRC)) for f in verb_closure(["ingest"])}
    assert "facesr/data/ingest.py" in ingest and "facesr/data/prepare.py" not in ingest  # one verb of cli/data.py
    assert facesr_verbs("mkdir -p x && facesr --profile ci register --eval e > r.txt") == [["register"]]
    # relative imports, from a module and from a package's __init__
    rel = ast.parse("from ..config import Params\nfrom . import common\n")
    assert imported([rel], "facesr.cli.main", False) == {"facesr", "facesr.config", "facesr.cli", "facesr.cli.common"}
    assert imported([ast.parse("from .main import cli\n")], "facesr.cli", True) == {"facesr", "facesr.cli",
                                                                                   "facesr.cli.main"}
