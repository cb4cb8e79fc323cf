"""mifdns: a split-DNS stub resolver for multi-interface hosts (RFC 6418, RFC 7556)."""

__version__ = "0.1.0"
