"""CURVE authentication and encryption for the relay's two sockets (optional).

How it works inside: docs/internals.md, "CURVE keys".
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from .vocabulary.errors import InvalidRequestError

__all__ = [
    "CurveKeys",
    "ClientCurve",
    "ServerCurve",
    "generate_keypair",
    "load_keypair",
    "load_public_key",
    "client_curve",
    "server_curve",
    "configure_client_socket",
    "configure_server_socket",
    "start_authenticator",
    "reload_authorized_keys",
]

log = logging.getLogger(__name__)

_HINT = "create keys with `dexorder-feeds keys DIR --name NAME`"


@dataclass(frozen=True, repr=False)
class CurveKeys:
    """A CURVE key pair (Z85 text as bytes). ``repr`` never shows the secret."""

    public: bytes
    secret: bytes

    def __repr__(self) -> str:
        return f"CurveKeys(public={self.public.decode()!r}, secret=***)"


@dataclass(frozen=True)
class ClientCurve:
    """What a client needs: its own key pair and the relay's public key."""

    keys: CurveKeys
    server_public: bytes


@dataclass(frozen=True)
class ServerCurve:
    """What the relay needs: its own key pair and the directory of admitted client keys."""

    keys: CurveKeys
    authorized_keys: Path


def _require_curve() -> None:
    if not zmq.has("curve"):
        raise InvalidRequestError("this libzmq was built without CURVE; install pyzmq from its wheels")


def generate_keypair(directory: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` and ``NAME.key_secret`` (mode 0600) into ``directory``; return both paths.

    Refuses to overwrite an existing key pair.
    """
    import zmq.auth

    _require_curve()
    if not name or any(ch in name for ch in "/\\\0") or name.startswith("."):
        raise InvalidRequestError(f"key name {name!r} must be a plain file name like 'relay' or 'alice'")
    folder = Path(directory).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    for path in (public, secret):
        if path.exists():
            raise InvalidRequestError(f"{path} already exists; choose another --name or remove the old key pair")
    old_umask = os.umask(0o077)  # the secret file is never readable by others, not even briefly
    try:
        public_file, secret_file = zmq.auth.create_certificates(str(folder), name)
    finally:
        os.umask(old_umask)
    os.chmod(secret_file, 0o600)
    os.chmod(public_file, 0o644)
    return Path(public_file), Path(secret_file)


def _load(path: str | os.PathLike[str], what: str) -> tuple[bytes, bytes | None]:
    import zmq.auth

    _require_curve()
    file = Path(path).expanduser()
    if not file.is_file():
        raise InvalidRequestError(f"{what} {str(file)!r} does not exist; {_HINT}")
    try:
        public, secret = zmq.auth.load_certificate(file)
    except (OSError, ValueError) as exc:
        raise InvalidRequestError(f"{what} {str(file)!r} is not a ZeroMQ key file ({type(exc).__name__}); {_HINT}") from None
    if not public or len(public) != 40:
        raise InvalidRequestError(f"{what} {str(file)!r} holds no valid public key; {_HINT}")
    return public, secret


def load_keypair(path: str | os.PathLike[str]) -> CurveKeys:
    """The key pair in a ``.key_secret`` file."""
    public, secret = _load(path, "curve_secret_key")
    if not secret or len(secret) != 40:
        raise InvalidRequestError(
            f"curve_secret_key {str(path)!r} holds no secret key: give the NAME.key_secret file, not NAME.key"
        )
    return CurveKeys(public, secret)


def load_public_key(path: str | os.PathLike[str]) -> bytes:
    """The public key in a ``.key`` (or ``.key_secret``) file."""
    return _load(path, "curve_server_key")[0]


def client_curve(settings: Any) -> ClientCurve | None:
    """The client's CURVE keys from settings (``curve_secret_key`` + ``curve_server_key``), or None."""
    secret_file = getattr(settings, "curve_secret_key", None)
    server_file = getattr(settings, "curve_server_key", None)
    if not secret_file and not server_file:
        return None
    if not (secret_file and server_file):
        raise InvalidRequestError(
            "CURVE needs both curve_secret_key (this client's NAME.key_secret) and curve_server_key "
            "(the relay's public .key file), or neither"
        )
    return ClientCurve(load_keypair(secret_file), load_public_key(server_file))


def server_curve(settings: Any) -> ServerCurve | None:
    """The relay's CURVE keys from settings (``curve_secret_key`` + ``curve_authorized_keys``), or None."""
    secret_file = getattr(settings, "curve_secret_key", None)
    authorized = getattr(settings, "curve_authorized_keys", None)
    if not secret_file and not authorized:
        return None
    if not (secret_file and authorized):
        raise InvalidRequestError(
            "the relay's CURVE needs both curve_secret_key (the relay's NAME.key_secret) and "
            "curve_authorized_keys (a directory of the client public keys it admits), or neither"
        )
    folder = Path(authorized).expanduser()
    if not folder.is_dir():
        raise InvalidRequestError(f"curve_authorized_keys {str(folder)!r} is not a directory of client public keys")
    return ServerCurve(load_keypair(secret_file), folder)


def configure_client_socket(sock: zmq.Socket, curve: ClientCurve | None) -> None:
    """Make ``sock`` a CURVE client of the relay (before ``connect``)."""
    if curve is None:
        return
    sock.setsockopt(zmq.CURVE_SERVERKEY, curve.server_public)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, curve.keys.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, curve.keys.secret)


def configure_server_socket(sock: zmq.Socket, curve: ServerCurve | None) -> None:
    """Make ``sock`` a CURVE server (before ``bind``)."""
    if curve is None:
        return
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, curve.keys.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, curve.keys.secret)


def _authorized_count(folder: Path) -> int:
    return sum(1 for path in folder.iterdir() if path.suffix == ".key" and path.is_file())


def start_authenticator(context: zmq.Context, curve: ServerCurve) -> Any:
    """Start the ZAP handler on the running event loop, admitting the keys in the directory.

    Returns the authenticator; call :func:`reload_authorized_keys` to re-read the directory and
    ``.stop()`` before terminating the context.
    """
    from zmq.auth.asyncio import AsyncioAuthenticator

    authenticator = AsyncioAuthenticator(context, log=logging.getLogger(__name__ + ".zap"))
    authenticator.start()
    reload_authorized_keys(authenticator, curve)
    return authenticator


def reload_authorized_keys(authenticator: Any, curve: ServerCurve) -> int:
    """(Re-)read the directory of admitted client keys; returns how many there are."""
    authenticator.configure_curve(domain="*", location=str(curve.authorized_keys))
    count = _authorized_count(curve.authorized_keys)
    if count == 0:
        log.warning("curve_authorized_keys %s holds no client .key file: no client can connect", curve.authorized_keys)
    else:
        log.info("CURVE: %d client keys admitted from %s", count, curve.authorized_keys)
    return count


def describe(curve: ClientCurve | ServerCurve | None) -> str:
    """A log-safe one-word description of the socket security."""
    return "curve" if curve is not None else "none"

