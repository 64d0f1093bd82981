"""Descriptors: raise the soft RLIMIT_NOFILE to the hard limit at start, as Go programs do.

Under systemd the soft limit defaults to 1024 (the hard one to 524288): a little over 500 proxied
connections would exhaust it. Each edge process raises its own soft limit once at start and says
what it got; /metrics (`edge_open_fds`, `edge_max_fds`) and `edge status` show use against it.
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger("edge")


def raise_nofile(*, quiet: bool = False) -> tuple[int, int]:
    """Set the soft limit to the hard one; returns (soft, hard) as they are after. Never raises."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("could not raise the descriptor limit from %d to %d: %s", soft, hard, exc)
    if not quiet:
        shown = "unlimited" if soft == resource.RLIM_INFINITY else str(soft)
        log.info("descriptor limit: %s (RLIMIT_NOFILE)", shown)
    return soft, hard
