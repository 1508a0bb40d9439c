import pytest
from click.testing import CliRunner

from abswin_convert.cli import main
from abswin_convert.io import hash_cache
from tests.cli_forkserver import ForkServer, cli_env

pytest_plugins = ["tests.hub_fixtures"]


@pytest.fixture(autouse=True, scope="session")
def own_hash_cache(tmp_path_factory):
    """The tests' conversions remember their sources' sha256 in a cache of their own, not in the user's."""
    with pytest.MonkeyPatch.context() as patch:  # the environment reaches the CLI's child processes too
        patch.setenv(hash_cache.ENV_VAR, str(tmp_path_factory.mktemp("hash-cache") / "sha256.json"))
        yield


@pytest.fixture
def cli():
    """Run ``abswin-convert ARGS...`` in-process; returns click's Result (exit_code, stdout, stderr)."""

    def run(*args: object):
        return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)

    return run


@pytest.fixture(scope="module")
def forkserver():
    """Run the CLI in a child forked from an interpreter that imported it once (see ``cli_forkserver``)."""
    server = ForkServer(cli_env())
    yield server
    server.close()
