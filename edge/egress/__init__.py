"""The egress router: sandboxes' outbound TCP, decided by Host, SNI and CIDR, then spliced (README.md).

Pure stages: policy (the policy record, its validation, `decide`, the always-denied ranges), host
(the Host of a request head), sni (the server name of a ClientHello), refusal (the bytes a refused
connection gets), nft (the nftables ruleset), config (the `[egress]` section), record (the log line).
I/O: original (SO_ORIGINAL_DST), resolve (edge's own DNS queries), server (the listener), stats.
"""
