"""The message for an import of llama_cx whose compiled parts are missing (numpy's is the model)."""
from __future__ import annotations

import importlib.machinery
import os

COMPILED = ("_kernels", "_sampling", "tokenizers/_bpe")  # paths inside the package


def _built(pkg: str, module: str) -> bool:
    folder, _, name = os.path.join(pkg, module).rpartition(os.sep)
    try:
        have = set(os.listdir(folder))
    except OSError:
        return False
    return any(name + sfx in have for sfx in importlib.machinery.EXTENSION_SUFFIXES)


def missing_build_message(err: ImportError) -> str:
    pkg = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(pkg)
    missing = [m.replace("/", ".") for m in COMPILED if not _built(pkg, m.replace("/", os.sep))]
    # Python words a missing extension inside a package as a "circular import": name the files instead
    why = f"no {', '.join(missing)} extension in {pkg}" if missing else str(err)
    if os.path.isfile(os.path.join(root, "setup.py")) and os.path.isdir(os.path.join(root, "csrc")):
        return (f"llama_cx is being imported from its source tree without its compiled parts ({why}). "
                f"Build them with `pip install -e .` or `python setup.py build_ext --inplace` in {root}, "
                f"or start Python from another directory to use an installed llama_cx.")
    return (f"llama_cx's compiled parts are missing or do not load ({why}); reinstall it "
            f"(`pip install --force-reinstall llama_cx`, or `pip install .` from its source tree).")
