"""Progress bars: only for large work, only on stderr, off with --quiet; --json output stays clean."""

from __future__ import annotations

import json

from abswin_convert import progress
from abswin_convert.demo import example_path


def test_a_bar_only_for_large_work_and_never_when_quiet():
    with progress.byte_bar(progress.LARGE_BYTES - 1, "convert") as small:
        assert small is None
    with progress.byte_bar(progress.LARGE_BYTES, "convert", enabled=False) as quiet:
        assert quiet is None
    with progress.byte_bar(progress.LARGE_BYTES, "convert") as advance:
        assert callable(advance)
        advance(progress.LARGE_BYTES)


def test_json_output_stays_clean_while_a_bar_runs(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(progress, "LARGE_BYTES", 0)  # every conversion counts as large
    advanced = []
    real = progress.byte_bar

    def spy(total, desc, enabled=True):
        advanced.append((total, desc, enabled))
        return real(total, desc, enabled)

    monkeypatch.setattr("abswin_convert.output.byte_bar", spy)
    result = cli("convert", example_path(), "-o", tmp_path / "o", "--img-size", 128, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["family"] == "hiera"
    assert advanced and advanced[0][1:] == ("convert", True) and advanced[0][0] > 1_000_000
    cli("convert", example_path(), "-o", tmp_path / "q", "--img-size", 128, "-q")
    assert advanced[-1][2] is False
