"""TLS for the edge: certificates by SNI (certs.py) and certificates obtained by ACME DNS-01 (acme.py)."""
