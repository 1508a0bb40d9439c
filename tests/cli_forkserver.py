"""Run ``abswin-convert`` many times, fast: one interpreter imports the CLI once, then forks a child per run.

Each run is its own process, and what comes back is what the console script would give: the exit status as the
interpreter computes it from ``SystemExit`` (or 1 and a printed traceback for any other exception), and stdout and
stderr captured at the file-descriptor level, so warnings, C++ messages and tracebacks all show. Only the import
(torch takes seconds on a busy machine) is shared, which turns minutes of start-up into seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

DRIVER = r"""
import json, os, sys, traceback
from abswin_convert.cli import main
import abswin_convert.api  # the library too (the CLI imports it lazily), once for all runs

def exit_status(code):
    # The interpreter's rule for an uncaught SystemExit.
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1

def child(request):
    os.chdir(request["cwd"])
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    for fd, name in ((1, "stdout"), (2, "stderr")):
        target = os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(target, fd)
        os.close(target)
    try:
        main(request["args"], prog_name="abswin-convert")
        status = 0
    except SystemExit as exc:
        status = exit_status(exc.code)
    except BaseException:
        traceback.print_exc()
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)

for line in sys.stdin:
    request = json.loads(line)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        child(request)
    _, status, usage = os.wait4(pid, 0)
    print(json.dumps({"status": os.waitstatus_to_exitcode(status), "peak_rss": usage.ru_maxrss * 1024}), flush=True)
"""


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    peak_rss: int = 0  # bytes, the child's own (it starts with the server's pages)


class ForkServer:
    """A long-lived interpreter with the CLI imported; ``run(args, cwd)`` is one ``abswin-convert ARGS`` process."""

    def __init__(self, env: dict[str, str]) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="abswin-forkserver-")
        self._proc = subprocess.Popen(
            [sys.executable, "-c", DRIVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
            cwd=self._dir.name,
        )

    def run(self, args: list[str], cwd: Path) -> Run:
        out, err = Path(self._dir.name) / "stdout", Path(self._dir.name) / "stderr"
        request = {"args": [str(a) for a in args], "cwd": str(cwd), "stdout": str(out), "stderr": str(err)}
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        reply = self._proc.stdout.readline()
        if not reply:
            raise RuntimeError("the fork server died")
        answer = json.loads(reply)
        return Run(answer["status"], out.read_text(), err.read_text(), answer["peak_rss"])

    def close(self) -> None:
        if self._proc.stdin:
            self._proc.stdin.close()
        self._proc.wait(timeout=30)
        self._dir.cleanup()


def cli_env() -> dict[str, str]:
    """The environment a user would have: no debug tracebacks, no network for Hub names."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("ABSWIN_DEBUG", None)
    return env
