"""genqueue: a durable job queue for slow, paid AI generations (see README.md)."""

__version__ = "0.1.0"
