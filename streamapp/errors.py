"""One root exception and one subclass per area."""

__all__ = [
    "BrokerError",
    "BundleError",
    "ConfigError",
    "DeliveryError",
    "StreamappError",
]


class StreamappError(Exception):
    """Root of every error streamapp raises on purpose."""


class ConfigError(StreamappError):
    """The configuration is invalid or inconsistent."""


class BundleError(StreamappError):
    """A model bundle is missing, tampered with, or inconsistent with its manifest."""


class BrokerError(StreamappError):
    """The Kafka cluster (or the embedded broker) is unreachable or refused a request."""


class DeliveryError(StreamappError):
    """The producer could not deliver an output record."""
