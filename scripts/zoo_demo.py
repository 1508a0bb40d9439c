"""A zoo run against the local test hub, end to end: no network, no pretrained weights.

Starts tests/hubserver.HubServer on 127.0.0.1, uploads tiny random-weight Hiera checkpoints in three native
formats (timm safetensors, official .pth, transformers folder) plus one broken repo, writes a manifest, and runs
`abswin-convert zoo` against it twice with HF_ENDPOINT pointing at the local hub, printing report.md each time.

    python scripts/zoo_demo.py [--work DIR] [--jobs N] [--executor local|ray]

Needs the `test` extra (timm, hiera-transformer, transformers; Ray for `--executor ray`, which starts a local Ray
instance in each run). Takes well under a minute on two CPU cores.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from huggingface_hub import HfApi  # noqa: E402

from tests import hiera_models  # noqa: E402
from tests.hubserver import HubServer  # noqa: E402

TOKEN = "hf_zoodemotoken"
ORG = "demo-org"

MANIFEST = f"""\
[defaults]
to = "baked"
out = "converted"

[[model]]
source = "{ORG}/hiera_timm@main"
img_size = [448, 512]
to = "timm-abswin"
push_to = "{ORG}/hiera_timm_abswin_{{size}}"
hooks = ["tests.zoo_hooks:weight_stats"]

[[model]]
source = "{ORG}/hiera_official"
img_size = 448

[[model]]
source = "hf://{ORG}/hiera_hf@main/model.safetensors"
name = "hiera_hf"
img_size = "448x320"
global_size = "28x28"

[[model]]
source = "{ORG}/broken"
img_size = 448
"""


def upload_sources(api: HfApi, folder: Path) -> None:
    """Three tiny Hiera checkpoints in their native formats, and a repo whose weights are not a checkpoint."""
    repos = {name: folder / name for name in ("hiera_timm", "hiera_official", "broken")}
    for path in repos.values():
        path.mkdir(parents=True)
    _, timm_file = hiera_models.save_timm(repos["hiera_timm"])
    timm_file.rename(repos["hiera_timm"] / "model.safetensors")
    (repos["hiera_timm"] / "README.md").write_text("---\nlicense: apache-2.0\n---\n# tiny timm Hiera\n")
    hiera_models.save_official(repos["hiera_official"])
    (repos["broken"] / "model.safetensors").write_bytes(b"this is not a checkpoint")
    _, hf_folder = hiera_models.save_transformers(folder)
    repos["hiera_hf"] = hf_folder
    for name, path in repos.items():
        api.create_repo(f"{ORG}/{name}", exist_ok=True)
        api.upload_folder(repo_id=f"{ORG}/{name}", folder_path=path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="Folder for the manifest and outputs (default: temp)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--executor", choices=("local", "ray"), default="local")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="zoo-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    with HubServer(work / "hub", token=TOKEN) as hub:
        upload_sources(HfApi(endpoint=hub.endpoint, token=TOKEN), work / "sources")
        manifest = work / "zoo.toml"
        manifest.write_text(MANIFEST)
        env = {
            **os.environ,
            "HF_ENDPOINT": hub.endpoint,
            "HF_TOKEN": TOKEN,
            "HF_HOME": str(work / "hf_home"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "PYTHONPATH": str(ROOT),  # for the tests.zoo_hooks hook
        }
        command = ["abswin-convert", "zoo", str(manifest), "--jobs", str(args.jobs), "--executor", args.executor]
        for run in ("first run", "second run: everything done is skipped, the broken source fails again"):
            print(f"\n# {run}\n$", " ".join(command), f"  (HF_ENDPOINT={hub.endpoint})", flush=True)
            status = subprocess.run(command, env=env, check=False).returncode
            print(f"\nexit status {status}; {work / 'converted' / 'report.md'}:\n")
            print((work / "converted" / "report.md").read_text(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
