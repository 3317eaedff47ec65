"""Binding the socket and running uvicorn on it."""

from __future__ import annotations

import socket

from mixfleet.dashboard.config import DashboardConfig
from mixfleet.errors import ConfigError

__all__ = ["bind", "serve", "url_of"]


def bind(config: DashboardConfig) -> socket.socket:
    """A listening socket on ``config.host:config.port`` (nothing else is bound)."""
    host = "127.0.0.1" if config.host == "localhost" else config.host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, config.port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {config.host}:{config.port} ({e.strerror}); "
                          f"pick another --port (0 picks a free one) or --host") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket, token: str | None) -> str:
    host, port = sock.getsockname()[:2]
    h = f"[{host}]" if ":" in host else host
    return f"http://{h}:{port}/" + (f"?token={token}" if token else "")


def serve(config: DashboardConfig, sock: socket.socket) -> None:
    """Serve the dashboard on ``sock`` until interrupted."""
    import uvicorn

    from mixfleet.dashboard.app import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(config), log_level="warning",
                                           lifespan="off", access_log=False,
                                           server_header=False))
    server.run(sockets=[sock])
