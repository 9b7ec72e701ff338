"""The package's shape: no import circle between its modules, and every module imports on its own."""
import ast
import os
import subprocess
import sys

import llama_cx

PKG_DIR = os.path.dirname(os.path.abspath(llama_cx.__file__))


def _modules(ext=(".py",)):
    """name -> path of every module of the package (packages as their __init__) with a file ending in ext."""
    out = {}
    for root, _, files in os.walk(PKG_DIR):
        for f in files:
            if f.endswith(ext):
                rel = os.path.relpath(os.path.join(root, f), os.path.dirname(PKG_DIR)).rpartition(".")[0]
                rel = rel.replace(os.sep, ".")
                out[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(root, f)
    return out


def _imports(name, path, known):
    """Modules of the package that `name` imports anywhere in its text (lazy imports inside functions too)."""
    is_pkg = path.endswith("__init__.py")
    package = name if is_pkg else name.rpartition(".")[0]
    deps = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            deps.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            for a in node.names:  # `from pkg import module` names a module; `from module import name` the module
                deps.add(f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod)
    return {d for d in deps if d in known and d != name}


def test_no_import_cycles():
    mods = _modules()
    known = set(mods) | set(_modules((".pyx",)))  # compiled modules import nothing of the package
    graph = {n: _imports(n, p, known) for n, p in mods.items()}
    graph.update({n: set() for n in known - set(mods)})
    state, stack = {}, []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for d in sorted(graph[n]):
            if state.get(d) == "open":
                cycle = stack[stack.index(d):] + [d]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if d not in state:
                visit(d)
        stack.pop()
        state[n] = "done"

    for n in sorted(graph):
        if n not in state:
            visit(n)


def test_every_module_imports_alone():
    names = sorted(n for n in _modules((".py", ".pyx")) if not n.endswith("__main__"))
    code = "import importlib, sys\nfor n in sys.argv[1:]:\n    importlib.import_module(n)\n"
    for name in names:  # one fresh interpreter each: no module may rely on another having been imported first
        r = subprocess.run([sys.executable, "-c", code, name], capture_output=True, text=True,
                           cwd=os.path.dirname(PKG_DIR))
        assert r.returncode == 0, f"{name}: {r.stderr.strip().splitlines()[-1:]}"
