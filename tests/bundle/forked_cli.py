"""``python -m MODULE ARGS`` for the bundle tests, without paying Python's start-up each time.

A bundle command on tiny data spends most of its 4-9 s importing torch, MONAI, Ignite and this package. Here one
``forkserver`` process imports them once and forks a child for each command; the child sets ``argv``, the working
folder, the environment and the standard streams (at the file-descriptor level) as a new interpreter would have
them, runs the module as ``__main__`` and exits with its exit code, the traceback of an uncaught exception going
through ``sys.excepthook`` (so ``epsseg_monai.utils.install_error_hook`` prints its last line as on the command
line). The result is a :class:`subprocess.CompletedProcess`, as from ``subprocess.run(..., capture_output=True,
text=True)``.

The forkserver never runs a parallel torch operation, so the children's OpenMP starts fresh. Set
``EPSSEG_TEST_SUBPROCESS=1`` to run every command in a new interpreter instead (slower; for debugging a difference).
Commands that must be separate programs (``torchrun``, a signal sent to the process) keep using ``subprocess``.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
from pathlib import Path

#: Imported once by the forkserver; what the bundle configs import is then already in every child.
PRELOAD = ["torch", "numpy", "scipy.ndimage", "tifffile", "nibabel", "ignite.engine", "monai", "monai.bundle",
           "monai.engines", "monai.handlers", "monai.inferers", "monai.transforms", "monai.data", "fire",
           "epsseg_monai", "epsseg_monai.networks", "epsseg_monai.inferers", "epsseg_monai.transforms",
           "epsseg_monai.losses", "epsseg_monai.handlers", "epsseg_monai.data", "epsseg_monai.metrics",
           "epsseg_monai.utils"]  # fmt: skip

_context: multiprocessing.context.BaseContext | None = None


def _forkserver() -> multiprocessing.context.BaseContext:
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _child(module: str, args: list[str], cwd: str, env: dict[str, str], out: str, err: str) -> None:
    """Runs in the forked child: a fresh interpreter's view of ``python -m module args``."""
    import logging
    import runpy
    import traceback

    code = 1
    try:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        for fd, path in ((1, out), (2, err)):
            target = os.open(path, os.O_WRONLY | os.O_TRUNC)
            os.dup2(target, fd)
            os.close(target)
        sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)
        sys.argv = [module, *args]
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as e:
            if e.code is None or isinstance(e.code, int):
                code = e.code or 0
            else:
                print(e.code, file=sys.stderr)
                code = 1
        except BaseException:
            sys.excepthook(*sys.exc_info())
            code = 1
        logging.shutdown()
    except BaseException:  # the set-up itself failed: say so on the (possibly redirected) stderr
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def run_module(module: str, args: list[str], cwd: str | os.PathLike | None = None, timeout: float = 600,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:  # fmt: skip
    """``subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True)``, forked."""
    args = [str(a) for a in args]
    cwd = os.fspath(cwd) if cwd is not None else os.getcwd()
    env = dict(os.environ if env is None else env)
    cmd = [sys.executable, "-m", module, *args]
    if os.environ.get("EPSSEG_TEST_SUBPROCESS", "") not in ("", "0"):
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    with tempfile.TemporaryDirectory(prefix="forked_cli") as tmp:
        out, err = Path(tmp, "stdout"), Path(tmp, "stderr")
        out.touch()
        err.touch()
        proc = _forkserver().Process(target=_child, args=(module, args, cwd, env, str(out), str(err)))
        proc.start()
        proc.join(timeout)
        if proc.exitcode is None:
            proc.kill()
            proc.join()
            raise subprocess.TimeoutExpired(cmd, timeout, out.read_text(), err.read_text())
        # a child killed by a signal has a negative exit code, as from subprocess
        return subprocess.CompletedProcess(cmd, proc.exitcode, out.read_text(errors="replace"),
                                           err.read_text(errors="replace"))  # fmt: skip
