"""Run the simulator under uvicorn: in the foreground, or in a background thread for tests."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import uvicorn
from starlette.applications import Starlette

from genqueue.simulator.app import create_app
from genqueue.simulator.config import SimConfig
from genqueue.simulator.lifecycle import Simulator


def _uvicorn_config(app: Starlette, host: str, port: int, access_log: bool) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=access_log,
        # No websockets or lifespan needed; skipping them avoids importing optional extras.
        ws="none",
        lifespan="off",
        http="h11",
        # A hung-request fault holds its connection open: don't let it stall shutdown.
        timeout_graceful_shutdown=2,
    )


def serve(
    config: SimConfig, host: str = "127.0.0.1", port: int = 8090, *, access_log: bool = False
) -> None:
    """Serve the simulator in the foreground until interrupted."""
    uvicorn.Server(_uvicorn_config(create_app(config), host, port, access_log)).run()


@dataclass
class SimServer:
    """A simulator running in a background thread."""

    base_url: str
    app: Starlette
    stop: Callable[[], None]

    @property
    def sim(self) -> Simulator:
        """The in-process ground truth (same object the server mutates)."""
        sim: Simulator = self.app.state.sim
        return sim


def start_in_thread(
    config: SimConfig,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    startup_timeout: float = 10.0,
) -> SimServer:
    """Start uvicorn in a daemon thread (port 0 picks a free port); return once it answers."""
    app = create_app(config)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    server = uvicorn.Server(_uvicorn_config(app, host, bound_port, access_log=False))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"sim-{bound_port}", daemon=True
    )
    thread.start()
    url_host = f"[{host}]" if ":" in host else host
    base_url = f"http://{url_host}:{bound_port}"

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()

    deadline = time.monotonic() + startup_timeout
    while True:
        try:
            if server.started and httpx.get(f"{base_url}/_sim/stats", timeout=1).is_success:
                break
        except httpx.TransportError:
            pass
        if not thread.is_alive() or time.monotonic() > deadline:
            stop()
            raise RuntimeError(f"simulator did not start on {base_url}")
        time.sleep(0.01)
    return SimServer(base_url=base_url, app=app, stop=stop)


def run_in_thread(
    config: SimConfig, host: str = "127.0.0.1", port: int = 0
) -> tuple[str, Callable[[], None]]:
    """Start the simulator in a background thread; return ``(base_url, stop)``."""
    server = start_in_thread(config, host, port)
    return server.base_url, server.stop


@contextlib.contextmanager
def running_simulator(
    config: SimConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> Iterator[SimServer]:
    """Context manager around :func:`start_in_thread` that always stops the server."""
    server = start_in_thread(config if config is not None else SimConfig(), host, port)
    try:
        yield server
    finally:
        server.stop()
