"""Errors raised by the crypto package: one base class and its three kinds."""


class CryptoError(Exception):
    """Base of every error the crypto package raises."""


class AuthenticationError(CryptoError):
    """An object failed authentication, has the wrong type or bad framing."""


class WrongPassword(CryptoError):
    """No key derived from the password opens this key file."""


class KeyFileError(CryptoError):
    """A key file is malformed, of an unsupported version, or has KDF parameters beyond limits."""
