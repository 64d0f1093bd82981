"""The `[egress]` config section, re-exported from edge/config.py where it lives. Pure.

The section is part of the one Config (config cannot import egress, so the dataclass and its checks
are defined there, and `config._check` calls `check` for it); the egress modules import them here.

    [egress]
    listen = "0.0.0.0:15001"          # where nftables REDIRECTs sandbox TCP; empty: no egress listener
    resolver = "203.0.113.53"          # edge's own resolver for allowed names; empty: the system's
    allow_private = ["10.20.0.0/16"]   # always-denied ranges edge may still dial (a package mirror)
"""

from __future__ import annotations

from edge.config import EgressConfig as EgressConfig
from edge.config import check_egress as check
from edge.config import parse_resolver as parse_resolver
from edge.config import private_exceptions as private_exceptions

__all__ = ["EgressConfig", "check", "parse_resolver", "private_exceptions"]
