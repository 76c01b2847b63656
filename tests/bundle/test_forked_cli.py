"""The forked command runner of the bundle tests behaves as a new interpreter would (exit code, streams, folder)."""

from __future__ import annotations

import os
import subprocess
import sys

from forked_cli import run_module
from test_bundle_configs import CONFIGS, _last_line


def test_forked_command_matches_a_new_interpreter(tmp_path):
    """A refused bundle run (mistyped run id): the same exit code and the same last line as ``python -m``."""
    args = ["run", "trainig", "--config_file", str(CONFIGS / "train.json"), "--bundle_root", str(tmp_path / "b")]
    fresh = subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300)  # fmt: skip
    forked = run_module("monai.bundle", args, cwd=tmp_path)
    assert fresh.returncode != 0 and forked.returncode == fresh.returncode
    assert "Unknown run id 'trainig'" in _last_line(fresh)
    assert _last_line(forked) == _last_line(fresh)


def test_forked_command_exit_code_streams_and_folder(tmp_path):
    """``sys.exit`` codes, both streams and the working folder reach the caller; the caller's folder is unchanged."""
    script = tmp_path / "probe.py"
    script.write_text(
        "import os, sys\n"
        "print('out', os.getcwd())\n"
        "print('err', sys.argv[1:], file=sys.stderr)\n"
        "sys.exit(int(sys.argv[1]))\n"
    )
    before = os.getcwd()
    sys.path.insert(0, str(tmp_path))
    try:
        result = run_module("probe", ["3"], cwd=tmp_path)
    finally:
        sys.path.remove(str(tmp_path))
    assert result.returncode == 3
    assert result.stdout.strip() == f"out {tmp_path}"
    assert result.stderr.strip() == "err ['3']"
    assert os.getcwd() == before
