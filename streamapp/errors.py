"""One root exception and one subclass per area."""

__all__ = [
    "BrokerError",
    "BundleError",
    "CommitPostponedError",
    "ConfigError",
    "ConsumerFencedError",
    "DataError",
    "DeliveryError",
    "DeliveryTimeoutError",
    "FencedError",
    "ProducerFatalError",
    "StreamappError",
    "TransactionError",
]


class StreamappError(Exception):
    """Root of every error streamapp raises on purpose."""


class ConfigError(StreamappError):
    """The configuration is invalid or inconsistent."""


class BundleError(StreamappError):
    """A model bundle is missing, tampered with, or inconsistent with its manifest."""


class DataError(StreamappError):
    """A user's data file cannot be read or does not fit the command (columns, values, classes)."""


class BrokerError(StreamappError):
    """The Kafka cluster (or the embedded broker) is unreachable or refused a request."""


class DeliveryError(StreamappError):
    """The producer could not deliver an output record."""


class DeliveryTimeoutError(DeliveryError):
    """Outputs were not acknowledged in time; they are still queued and may yet arrive."""


class CommitPostponedError(DeliveryTimeoutError):
    """The group coordinator could not be reached for a commit; the offsets stay pending."""


class ProducerFatalError(DeliveryError):
    """The producer failed for good (e.g. an idempotent producer desynchronized by a broker
    restart); its undelivered records are lost, so the caller replaces it and re-reads."""


class TransactionError(StreamappError):
    """A transaction failed; if ``abortable`` it was (or must be) aborted and retried; if
    ``retriable`` the same call may simply be made again (e.g. a commit that timed out)."""

    def __init__(self, message: str, abortable: bool = True, retriable: bool = False) -> None:
        super().__init__(message)
        self.abortable = abortable
        self.retriable = retriable


class FencedError(StreamappError):
    """Another instance with this transactional.id took over; this one must stop."""


class ConsumerFencedError(FencedError):
    """The broker fenced this static group member (its ``group.instance.id``): a newer
    instance, or the member itself rejoining after a coordinator failover."""
