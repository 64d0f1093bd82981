"""edge: a self-hosted edge for sandbox platforms.

`<port>-<sandbox>.<domain>` reaches the server listening on <port> inside <sandbox>: a wildcard DNS
server answers for the domains, an HTTP/1.1 proxy routes each request by its Host, and a catalog of
sandboxes (SQLite by default) says where each sandbox lives.
"""

__version__ = "0.1.0"
