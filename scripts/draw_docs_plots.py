"""Draw the README's three ``inspect --plot`` figures (docs/inspect_plot_*.png) with the CLI itself

    python scripts/draw_docs_plots.py [--out docs]

The sources are what the tests build: a tiny timm Hiera with a planted 8x8 window pattern (224 px, drawn at 448),
a tiny segment-anything SAM with a planted 14x14 pattern (1024 px, drawn at 1536), and the shipped example, whose
embedding has no window pattern. Each figure is ``abswin-convert inspect SRC --plot OUT``: rerun this after a change
to the plot so that the README shows what the tool draws.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' model builders
from tests import hiera_models  # noqa: E402
from tests.test_sam import plant_window_pattern, sa_model, save  # noqa: E402

CLI = str(Path(sys.executable).with_name("abswin-convert"))
EXAMPLE = ROOT / "abswin_convert" / "examples" / "hiera_tiny"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="folder of the figures")
    out = parser.parse_args().out
    with tempfile.TemporaryDirectory() as tmp:
        sources = {
            "inspect_plot_periodic_hiera.png": (hiera_models.save_timm(Path(tmp))[1], 448),
            "inspect_plot_sam.png": (save("segment-anything", plant_window_pattern("segment-anything", sa_model()),
                                          Path(tmp)), 1536),
            "inspect_plot_example.png": (EXAMPLE, 128),
        }
        for name, (source, size) in sources.items():
            subprocess.run([CLI, "inspect", str(source), "--plot", str(out / name), "--img-size", str(size), "--force"],
                           check=True, stdout=subprocess.DEVNULL)
            print(f"wrote {out / name}")


if __name__ == "__main__":
    main()
