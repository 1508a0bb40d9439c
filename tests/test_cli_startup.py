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
    # the other side of the check above: a public name imports its module when touched; conversion needs no torch,
    # the in-memory API (torch tensors in and out) does
    script = "import abswin_convert\nassert abswin_convert.convert.__module__ == 'abswin_convert.api'"
    assert "numpy" in loaded_after(script)["heavy"] and "torch" not in loaded_after(script)["heavy"]
    script = "import abswin_convert\nabswin_convert.convert_state_dict"
    assert "torch" in loaded_after(script)["heavy"]


def _checkpoints(folder: Path) -> dict[str, Path]:
    """One small Hiera-shaped checkpoint as safetensors, a torch zip (wrapped, with an EMA copy), a legacy torch
    file and a detectron2-style pickle."""
    import pickle

    import numpy as np
    import torch
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    state = {"pos_embed": rng.standard_normal((1, 256, 8)).astype(np.float32),
             "blocks.0.attn.qkv.weight": rng.standard_normal((24, 8)).astype(np.float32)}
    torch_state = {k: torch.from_numpy(v) for k, v in state.items()}
    paths = {"safetensors": folder / "m.safetensors", "zip": folder / "m.pth", "legacy": folder / "legacy.pth",
             "pickle": folder / "m.pkl"}
    save_file(state, paths["safetensors"])
    torch.save({"state_dict": torch_state, "state_dict_ema": torch_state, "epoch": 3}, paths["zip"])
    torch.save(torch_state, paths["legacy"], _use_new_zipfile_serialization=False)
    paths["pickle"].write_bytes(pickle.dumps({"model": state, "__author__": "test"}))
    return paths


def _convert_args(source: Path, output: Path) -> list[str]:
    return ["convert", str(source), "-o", str(output), "--img-size", "128", "--family", "generic", "--key", "pos_embed",
            "--window", "8", "--patch-stride", "4", "--layout", "flat"]


@pytest.mark.parametrize("kind", ["safetensors", "zip", "legacy", "pickle"])
def test_conversion_to_safetensors_imports_no_torch(tmp_path, kind):
    source = _checkpoints(tmp_path)[kind]
    result = loaded_after(RUN_CLI, *_convert_args(source, tmp_path / "out.safetensors"))
    assert result["code"] == 0 and "numpy" in result["heavy"] and "torch" not in result["heavy"]


@pytest.mark.parametrize("kind", ["safetensors", "zip", "legacy", "pickle"])
def test_a_torch_output_imports_no_torch_either(tmp_path, kind):
    # a .pt file is written by the package's own writer, a training checkpoint's other entries included
    result = loaded_after(RUN_CLI, *_convert_args(_checkpoints(tmp_path)[kind], tmp_path / "out.pt"))
    assert result["code"] == 0 and "numpy" in result["heavy"] and "torch" not in result["heavy"]


# Runs the CLI as on a conversion-only install: importing torch fails as if it were not installed.
WITHOUT_TORCH = """
import importlib.abc

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoTorch())
""" + RUN_CLI


def test_without_torch_conversion_works_and_a_torch_output_too(tmp_path):
    sources = _checkpoints(tmp_path)
    assert loaded_after(WITHOUT_TORCH, *_convert_args(sources["zip"], tmp_path / "out.safetensors"))["code"] == 0
    assert (tmp_path / "out.safetensors").stat().st_size > 0
    for kind in ("zip", "safetensors"):  # a training checkpoint (EMA copy, epoch) and a plain state dict
        assert loaded_after(WITHOUT_TORCH, *_convert_args(sources[kind], tmp_path / f"{kind}.pt"))["code"] == 0
    import torch

    wrapped = torch.load(tmp_path / "zip.pt", weights_only=True)
    assert wrapped["epoch"] == 3 and set(wrapped) == {"state_dict", "state_dict_ema", "epoch"}
    assert set(wrapped["state_dict"]) == set(wrapped["state_dict_ema"]) == {"pos_embed", "blocks.0.attn.qkv.weight"}
    assert set(torch.load(tmp_path / "safetensors.pt", weights_only=True)) == {"pos_embed", "blocks.0.attn.qkv.weight"}


def test_without_torch_a_zoo_hook_that_needs_it_fails_its_row_saying_what_to_install(tmp_path):
    from abswin_convert.demo import example_path

    manifest = tmp_path / "zoo.toml"
    manifest.write_text(f'[defaults]\nto = "baked"\nout = "{tmp_path / "out"}"\n[[model]]\nname = "ex"\n'
                        f'source = "{example_path()}"\nimg_size = [128]\nhooks = ["verify"]\n')
    assert loaded_after(WITHOUT_TORCH, "zoo", str(manifest))["code"] == 1  # an output failed
    row = json.loads((tmp_path / "out" / "report.json").read_text())["outputs"][0]
    assert row["status"] == "failed"
    assert row["error"] == ("hook verify: this needs torch, which a conversion-only install leaves out: "
                            "pip install 'abswin-convert[torch]'")


def test_a_zoo_run_off_a_terminal_loads_only_numpy(tmp_path):
    # no bar is shown off a terminal, so tqdm is not loaded; the report's tables need no Hub client
    from abswin_convert.demo import example_path

    manifest = tmp_path / "zoo.toml"
    manifest.write_text(f'[defaults]\nto = "baked"\nout = "{tmp_path / "out"}"\n[[model]]\nname = "ex"\n'
                        f'source = "{example_path()}"\nimg_size = [128]\n')
    result = loaded_after(RUN_CLI, "zoo", str(manifest))
    assert result == {"code": 0, "heavy": ["numpy"]}
    assert json.loads((tmp_path / "out" / "report.json").read_text())["outputs"][0]["status"] == "converted"


def test_without_torch_what_needs_it_says_what_to_install(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = f"import sys\n{WITHOUT_TORCH}\nsys.exit(code)"
    done = subprocess.run([sys.executable, "-c", script, "demo", "-o", str(tmp_path / "demo")],
                          capture_output=True, text=True, cwd=ROOT, env=env)
    assert done.returncode == 2
    assert done.stderr.strip() == ("abswin-convert: error: this needs torch, which a conversion-only install leaves "
                                   "out: pip install 'abswin-convert[torch]'")
    assert not (tmp_path / "demo").exists()
