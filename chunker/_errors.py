"""The chunker package's one base error."""


class ChunkerError(Exception):
    """Raised for invalid chunker parameters, a missing fastcdc extension, or bad input."""
