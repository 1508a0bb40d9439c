"""The command line starts without the heavy libraries: help, version and option errors import none of them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "numpy", "safetensors", "huggingface_hub", "matplotlib", "transformers", "timm", "tqdm", "ray")

# Runs the CLI's main with the arguments given; the exit status is printed with the loaded heavy modules.
RUN_CLI = """
from abswin_convert.cli import main
try:
    main(sys.argv[1:], prog_name="abswin-convert")
    code = 0
except SystemExit as exit:
    code = exit.code
"""
REPORT = """
import json
heavy = sorted({name.split(".")[0] for name in sys.modules} & set(HEAVY))
print(json.dumps({"code": code, "heavy": heavy}))
"""


def loaded_after(script: str, *args: str) -> dict:
    """Run ``script`` in a fresh interpreter; its exit status (``code``) and the heavy modules it loaded."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", f"import sys\nHEAVY = {HEAVY!r}\ncode = 0\n{script}\n{REPORT}", *args]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--help"], 0),
        (["--version"], 0),
        (["convert", "--help"], 0),
        (["zoo", "--help"], 0),
        (["inspect", "--help"], 0),
        (["convert", "in.pt", "out", "--img-size", "448", "--bogus"], 2),
        (["convert", "in.pt", "out", "--img-size", "448", "--to", "nowhere"], 2),
        (["zoo", "zoo.toml", "--executor", "nowhere"], 2),
    ],
)
def test_help_version_and_option_errors_import_nothing_heavy(args, code):
    assert loaded_after(RUN_CLI, *args) == {"code": code, "heavy": []}


def test_the_library_names_load_on_first_use():
    # the other side of the check above: a public name imports its module when touched, torch included
    script = "import abswin_convert\nassert abswin_convert.convert.__module__ == 'abswin_convert.api'"
    assert "torch" in loaded_after(script)["heavy"]
