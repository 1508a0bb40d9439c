import pytest
from click.testing import CliRunner

from abswin_convert.cli import main

pytest_plugins = ["tests.hub_fixtures"]


@pytest.fixture
def cli():
    """Run ``abswin-convert ARGS...`` in-process; returns click's Result (exit_code, stdout, stderr)."""

    def run(*args: object):
        return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)

    return run
