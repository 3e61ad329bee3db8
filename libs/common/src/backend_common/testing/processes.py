"""Processes that tests start: free loopback ports, a tie to the test run's life, a clean stop."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess

STOP_TIMEOUT_SECONDS = 15.0


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports free right now."""
    # Every socket stays open until all ports are chosen, so the kernel hands out distinct ones.
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    return free_ports(1)[0]


def die_with_parent() -> None:
    """`preexec_fn` of a child that must get SIGTERM if pytest dies without its teardown."""
    prctl_set_pdeathsig = 1  # Linux PR_SET_PDEATHSIG
    ctypes.CDLL(None, use_errno=True).prctl(prctl_set_pdeathsig, signal.SIGTERM)


def stop_process(
    process: subprocess.Popen[bytes],
    *,
    timeout: float = STOP_TIMEOUT_SECONDS,
    group: bool = False,
    sig: int = signal.SIGTERM,
) -> None:
    """`sig` (SIGTERM), then SIGKILL if it still runs after `timeout` seconds; to its whole
    process group when `group` (a child started with `start_new_session=True`)."""
    if process.poll() is not None:
        return

    def send(signal_number: int) -> None:
        try:
            if group:
                os.killpg(process.pid, signal_number)
            else:
                process.send_signal(signal_number)
        except ProcessLookupError:
            pass

    send(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait()
