"""Build of llama_cx's compiled parts.

- `llama_cx._kernels`: the Cython layer over every C kernel in csrc/ (one extension, OpenMP).
- every other `llama_cx/_*.pyx`: a standalone Cython module (tokenizer core, dequantizers).

The C sources choose their instruction set per function (`#pragma GCC target` in the
per-ISA files) and dispatch at run time, so the default build runs on any x86-64 and
never depends on the build machine's own instruction set (native tuning is an opt-in option below).

Environment switches (all opt-in):
  LLAMA_CX_NO_OPENMP=1   build serial even when the compiler supports OpenMP
  LLAMA_CX_SANITIZE=1    build with AddressSanitizer + UndefinedBehaviorSanitizer
  LLAMA_CX_NATIVE=1      add -march=native (a "this machine only" build)
"""
import glob
import os
import shutil
import sys
import tempfile
import warnings

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

from Cython.Build import cythonize

HERE = os.path.dirname(os.path.abspath(__file__))

OPENMP_PROBE = r"""
#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    return n > 0 && omp_get_max_threads() > 0 ? 0 : 1;
}
"""


def _flag(name):
    return os.environ.get(name, "").strip() not in ("", "0", "false", "no")


class BuildExt(build_ext):
    """Chooses compiler flags per compiler type and probes for OpenMP."""

    def _compiles_with(self, source, compile_args, link_args):
        tmp = tempfile.mkdtemp(prefix="lcx-probe-")
        try:
            path = os.path.join(tmp, "probe.c")
            with open(path, "w") as f:
                f.write(source)
            objs = self.compiler.compile([path], output_dir=tmp, extra_postargs=compile_args)
            self.compiler.link_executable(objs, "probe", output_dir=tmp, extra_postargs=link_args)
            return True
        except Exception:
            return False
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def build_extensions(self):
        ctype = self.compiler.compiler_type
        compile_args, link_args = [], []
        if ctype == "msvc":
            compile_args += ["/O2"]
            omp_compile, omp_link = ["/openmp"], []
        else:
            compile_args += ["-O3", "-fno-math-errno", "-fno-trapping-math", "-Wno-unused-function"]
            omp_compile, omp_link = ["-fopenmp"], ["-fopenmp"]

        openmp = False
        if _flag("LLAMA_CX_NO_OPENMP"):
            warnings.warn("llama_cx: LLAMA_CX_NO_OPENMP set, building without OpenMP (single-threaded kernels)")
        elif self._compiles_with(OPENMP_PROBE, omp_compile, omp_link):
            openmp = True
            compile_args += omp_compile
            link_args += omp_link
        else:
            warnings.warn(
                "llama_cx: the C compiler cannot build OpenMP programs; building serial kernels "
                "(install libgomp / libomp for multi-threading)"
            )
        if _flag("LLAMA_CX_SANITIZE") and ctype != "msvc":
            san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]
            compile_args += san + ["-O1", "-g"]
            link_args += san
        if _flag("LLAMA_CX_NATIVE") and ctype != "msvc":
            compile_args += ["-march=native"]  # opt-in only (LLAMA_CX_NATIVE=1): this machine only

        for ext in self.extensions:
            ext.extra_compile_args = list(ext.extra_compile_args or []) + compile_args
            ext.extra_link_args = list(ext.extra_link_args or []) + link_args
            ext.define_macros = list(ext.define_macros or []) + [("LCX_BUILT_WITH_OPENMP", "1" if openmp else "0")]
        super().build_extensions()


def extensions():
    csources = sorted(glob.glob(os.path.join("csrc", "**", "*.c"), recursive=True))
    exts = [
        Extension(
            "llama_cx._kernels",
            ["llama_cx/_kernels.pyx"] + csources,
            include_dirs=["csrc"],
            depends=sorted(glob.glob(os.path.join("csrc", "**", "*.h"), recursive=True)),
        )
    ]
    for pyx in sorted(glob.glob(os.path.join("llama_cx", "_*.pyx"))):
        name = os.path.splitext(os.path.basename(pyx))[0]
        if name != "_kernels":
            exts.append(Extension("llama_cx." + name, [pyx], include_dirs=["csrc"]))
    return cythonize(
        exts,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
