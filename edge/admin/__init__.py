"""The admin API: JSON over HTTP for the catalog, /metrics and a status summary. See README.md."""
