"""The programs in examples/ run, each against a real peer in another process.

A server example is started as a subprocess and announces its address on its
first line of output; its client is either the matching example, also a
subprocess, or stockings in this process. Servers are stopped with SIGTERM and
must then exit cleanly.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

import stockings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

pytestmark = pytest.mark.skipif(
    not hasattr(signal, "SIGTERM") or sys.platform == "win32",
    reason="the servers are stopped with SIGTERM",
)


class RunningServer:
    """An example server in a subprocess, and the address it listens on."""

    def __init__(self, script: str, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(EXAMPLES / script), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        first = self.process.stdout.readline()
        if not first.startswith("listening on "):
            self.process.kill()
            _, err = self.process.communicate(timeout=10)
            raise AssertionError(f"{script} did not start: {first!r} {err}")
        self.address = first.removeprefix("listening on ").strip()
        host, _, port = self.address.rpartition(":")
        self.host_port = (host, int(port))

    def expect(self, text: str) -> str:
        """Read the server's output until a line holds ``text``; return that line.

        The server prints after its peer may already have exited, so a test
        waits for the line rather than racing the server to it.
        """
        assert self.process.stdout is not None
        while line := self.process.stdout.readline():
            if text in line:
                return line
        raise AssertionError(f"the server ended without printing {text!r}")

    def stop(self) -> str:
        """Stop the server as Ctrl-C would; return the rest of its output."""
        self.process.send_signal(signal.SIGTERM)
        out, err = self.process.communicate(timeout=20)
        assert self.process.returncode == 0, err
        assert "Traceback" not in err, err
        return out


@contextlib.contextmanager
def start(script: str, *args: str) -> Iterator[RunningServer]:
    """Run an example server on a free port for the ``with`` block; kill it if still up."""
    server = RunningServer(script, *args, "--port", "0")
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.communicate(timeout=10)


def run(script: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a client example to its end."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture
def echo_server() -> Iterator[RunningServer]:
    with start("echo_server.py") as server:
        yield server


def test_echo_client_against_echo_server(echo_server: RunningServer) -> None:
    result = run("echo_client.py", echo_server.address, "hello", "how are you", "")
    assert result.stdout == "hello\nhow are you\n\n"
    echo_server.expect("connected")
    echo_server.expect("left: PEER_CLOSED")
    echo_server.stop()


@pytest.fixture
def chat_server() -> Iterator[RunningServer]:
    with start("chat_server.py") as server:
        yield server


def test_chat_server_relays_between_clients(chat_server: RunningServer) -> None:
    with stockings.connect(chat_server.host_port, timeout=10) as alice:
        alice.write("alice")
        assert alice.read(timeout=10) == "* welcome, alice"
        with stockings.connect(chat_server.host_port, timeout=10) as bob:
            bob.write("bob")
            assert bob.read(timeout=10) == "* welcome, bob"
            assert alice.read(timeout=10) == "* bob joined"
            bob.write("hi alice")
            assert alice.read(timeout=10) == "bob: hi alice"
            alice.write(b"bytes too")
            assert bob.read(timeout=10) == "alice: b'bytes too'"
        assert alice.read(timeout=10) == "* bob left"
    chat_server.stop()


@pytest.fixture
def rpc_server() -> Iterator[RunningServer]:
    with start("json_rpc.py", "serve") as server:
        yield server


def test_json_rpc_calls(rpc_server: RunningServer) -> None:
    assert run("json_rpc.py", "call", rpc_server.address, "add", "2", "3", "4.5").stdout == "9.5\n"
    assert run("json_rpc.py", "call", rpc_server.address, "upper", '"hi"').stdout == '"HI"\n'
    failed = run("json_rpc.py", "call", rpc_server.address, "divide", "1", check=False)
    assert failed.returncode == 1
    assert "no method 'divide'" in failed.stderr
    rpc_server.stop()


def test_send_file_with_progress(tmp_path: Path) -> None:
    incoming = tmp_path / "incoming"
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 123))
    with start("send_file.py", "receive", "--into", str(incoming)) as server:
        result = run("send_file.py", "send", server.address, str(source))
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        assert result.stdout == f"sent big.bin: {source.stat().st_size} bytes, sha256 {digest}\n"
        assert "100%" in result.stderr
        assert (incoming / "big.bin").read_bytes() == source.read_bytes()
        server.expect("received big.bin")
        server.stop()


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    paths = {"ca": folder / "ca.pem", "cert": folder / "server.pem", "key": folder / "server.key"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    cert.private_key_pem.write_to_path(str(paths["key"]))
    cert.private_key_and_cert_chain_pem.write_to_path(str(paths["cert"]))
    return {name: str(path) for name, path in paths.items()}


def test_tls_echo(certificates: dict[str, str]) -> None:
    args = ("serve", "--cert", certificates["cert"], "--key", certificates["key"])
    with start("tls_echo.py", *args) as server:
        ok = run("tls_echo.py", "connect", server.address, "--cafile", certificates["ca"], "sec")
        assert ok.stdout == "sec\n"
        # Without the test CA the client refuses the server's certificate.
        refused = run("tls_echo.py", "connect", server.address, "hello", check=False)
        assert refused.returncode == 1
        assert "HANDSHAKE_FAILED" in refused.stderr
        assert "certificate verify failed" in refused.stderr
        server.stop()


def test_auth_accepts_the_key_and_refuses_another(tmp_path: Path) -> None:
    key, wrong = tmp_path / "key", tmp_path / "wrong"
    key.write_bytes(os.urandom(32))
    wrong.write_bytes(os.urandom(32))
    with start("auth.py", "serve", "--key-file", str(key)) as server:
        ok = run("auth.py", "connect", server.address, "hello", "--key-file", str(key))
        assert ok.stdout == "authenticated echo: hello\n"
        refused = run(
            "auth.py", "connect", server.address, "hello", "--key-file", str(wrong), check=False
        )
        assert refused.returncode == 1
        assert "handshake failed" in refused.stderr
        server.expect("refused")
        server.stop()
