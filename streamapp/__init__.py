"""streamapp: an event-driven streaming inference worker with online transfer learning."""

__all__ = ["__version__"]

__version__ = "0.1.0"
