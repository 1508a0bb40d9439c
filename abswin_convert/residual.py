"""The residual of a refitted global part (``--global-size GHxGW``) in words, and when it earns a warning.

The residual is ``||resize(G') - G|| / ||G||`` for the least-squares fit ``G'`` of the global part ``G`` on the
smaller grid (``maths.absolute_win.fit_global``). The fit is a projection, so its square is the share of the global
part's energy the smaller grid cannot hold: what the converted model no longer sees at the source's own size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI imports this module for --help, which loads no numpy
    from .io.provenance import Conversion

WARN_OVER = 0.01  # warn when the refit loses more than 1% of the global part's energy (a residual over 0.1)


def lost_share(residual: float) -> float:
    """The share of the global part's energy that the refitted grid loses, in [0, 1]."""
    return min(residual * residual, 1.0)


def in_words(residual: float) -> str:
    """E.g. ``9.37e-01 (88% of the global part lost)``, or ``0 (exact)``."""
    if residual == 0:
        return "0 (exact)"
    return f"{residual:.2e} ({100 * lost_share(residual):.2g}% of the global part lost)"


def warning(done: Conversion) -> str | None:
    """The warning a conversion's refit past ``WARN_OVER`` earns, or None."""
    if lost_share(done.residual) <= WARN_OVER:
        return None
    from .io.provenance import NO_GLOBAL_PART  # not at import: see above
    from .maths.grid import format_size

    global_size = NO_GLOBAL_PART if done.global_size is None else format_size(done.global_size)
    return (
        f"the {global_size} global grid loses {lost_share(done.residual):.0%} of the global part (more than the "
        f"{WARN_OVER:.0%} this tool warns at): at its own size the converted model no longer computes what the source "
        "did; use a larger global size, or full (exact)"
    )
