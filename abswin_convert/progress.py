"""Progress bars on stderr for work that can take more than a few seconds; never on stdout, never off a terminal."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

LARGE_BYTES = 256 << 20  # below this a conversion takes about a second: no bar


@contextmanager
def byte_bar(total: int, desc: str, enabled: bool = True) -> Iterator[Callable[[int], None] | None]:
    """A callback that advances a bytes bar (tqdm on stderr, shown only on a terminal), or None when the work is small
    or the user asked for quiet."""
    if not enabled or total < LARGE_BYTES:
        yield None
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, disable=None, leave=False) as bar:
        yield bar.update
