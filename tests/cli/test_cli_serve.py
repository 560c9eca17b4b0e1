"""``stockings serve`` end to end, and what every command shares: TLS and the authkey."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest
import trustme

from cli_helpers import DEADLINE, one_line_error, run_cli, server

pytestmark = pytest.mark.timeout(60)


def _connect(address: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    sock = socket.create_connection((host.strip("[]"), int(port)), timeout=DEADLINE)
    return sock


def _read_to_end(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.mark.parametrize("port", ["99999", "65536", "-1", "http"])
def test_an_out_of_range_port_is_a_usage_error(port: str) -> None:
    # Issue 14, item 3: --port 99999 ended in an OverflowError traceback.
    result = run_cli("serve", "--port", port)
    assert result.returncode == 2
    assert "port" in one_line_error(result.stderr)


def test_a_port_in_use_is_one_line() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_cli("serve", "--port", str(port))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in one_line_error(result.stderr)


def _ipv6_loopback() -> bool:
    try:
        with socket.create_server(("::1", 0), family=socket.AF_INET6):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
def test_serve_on_ipv6() -> None:
    # Issue 14, item 4: --host ::1 failed with "Address family ... not supported".
    with server("--host", "::1") as (serve, address):
        assert address.startswith("[::1]:")
        result = run_cli("cat", "--expect", "1", address, stdin="over six\n")
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"over six\n"
        serve.err.expect(rb"\[::1\]:\d+ connected")


def test_ctrl_c_exits_130() -> None:
    # Issue 14, item 6: Ctrl-C exited 0.
    with server() as (serve, _):
        serve.popen.send_signal(signal.SIGINT)
        serve.expect_status(130)
        assert serve.err.until_closed().endswith(b"stockings serve: interrupted\n")


def test_echoes_a_message_that_arrives_with_the_half_close() -> None:
    # Issue 14, item 8: printf '\x82hi' | nc -N got nothing back.
    with server() as (serve, address):
        for _ in range(3):
            with _connect(address) as sock:
                sock.sendall(b"\x82hi")
                sock.shutdown(socket.SHUT_WR)
                assert _read_to_end(sock) == b"\x82hi"
        serve.err.expect(rb"left after [\d.]+ s: peer closed \(1 messages in, 1 out\)")


def test_print_logs_each_message_with_its_peer_and_does_not_echo() -> None:
    with server("--print") as (serve, address), _connect(address) as sock:
        port = sock.getsockname()[1]
        sock.sendall(b"\x85hello\xc3\x00\x1b\xff")
        sock.shutdown(socket.SHUT_WR)
        assert _read_to_end(sock) == b""
        assert serve.out is not None
        serve.out.expect(rf"\] 127\.0\.0\.1:{port} text: hello\n".encode())
        serve.out.expect(rf"\] 127\.0\.0\.1:{port} bytes: b'\\x00\\x1b\\xff'\n".encode())


def test_the_left_notice_says_why() -> None:
    with server() as (serve, address), _connect(address) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
        serve.err.expect(
            rb"left after [\d.]+ s: protocol error: message header longer than 10 bytes"
        )


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A CA and a server certificate for 127.0.0.1, as PEM files."""
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    cert.private_key_pem.write_to_path(str(paths["key"]))
    return {name: str(path) for name, path in paths.items()}


def test_tls_round_trip(certificates: dict[str, str]) -> None:
    tls = ["--tls", "--certfile", certificates["cert"], "--keyfile", certificates["key"]]
    with server(*tls) as (serve, address):
        serve.err.expect(rb"over TLS")
        result = run_cli("cat", "--cafile", certificates["ca"], "--expect", "1", address, stdin="s")
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"s\n"
        assert b"over TLS" in result.stderr
        insecure = run_cli("cat", "--insecure", "--expect", "1", address, stdin="i")
        assert insecure.returncode == 0, insecure.stderr
        assert insecure.stdout == b"i\n"


def test_tls_refuses_a_certificate_it_cannot_verify(certificates: dict[str, str]) -> None:
    with server("--certfile", certificates["cert"], "--keyfile", certificates["key"]) as (
        serve,
        address,
    ):
        result = run_cli("cat", "--tls", address, stdin="x\n")
        assert result.returncode == 1
        error = one_line_error(result.stderr)
        assert "connection ended: handshake failed: TLS handshake failed" in error
        assert "CERTIFICATE_VERIFY_FAILED" in error
        serve.err.expect(rb"left after [\d.]+ s: handshake failed")


def test_a_tls_server_needs_a_certificate() -> None:
    result = run_cli("serve", "--tls")
    assert result.returncode == 2
    assert "--certfile" in one_line_error(result.stderr)


def test_a_missing_certificate_file_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("cat", "--cafile", str(tmp_path / "none.pem"), "127.0.0.1:1")
    assert result.returncode == 2
    assert "cannot load --cafile" in one_line_error(result.stderr)


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, str]:
    paths = {"right": tmp_path / "right.key", "wrong": tmp_path / "wrong.key"}
    paths["right"].write_bytes(b"k" * 32 + b"\n")
    paths["wrong"].write_bytes(b"w" * 32)
    return {name: str(path) for name, path in paths.items()}


def test_authkey_round_trip(keys: dict[str, str]) -> None:
    with server("--authkey-file", keys["right"]) as (serve, address):
        serve.err.expect(rb"with an authkey")
        result = run_cli(
            "cat", "--authkey-file", keys["right"], "--expect", "1", address, stdin="a"
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"a\n"


def test_a_wrong_authkey_is_refused_on_both_ends(keys: dict[str, str]) -> None:
    with server("--authkey-file", keys["right"]) as (serve, address):
        result = run_cli("cat", "--authkey-file", keys["wrong"], address, stdin="a\n")
        assert result.returncode == 1
        error = one_line_error(result.stderr)
        assert "connection ended: handshake failed" in error
        assert "different authkeys" in error
        assert b"connected to" not in result.stderr
        serve.err.expect(rb"left after [\d.]+ s: handshake failed: .*different authkeys")


def test_an_empty_authkey_file_is_a_usage_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.key"
    empty.write_bytes(b"\n")
    result = run_cli("serve", "--authkey-file", str(empty))
    assert result.returncode == 2
    assert "is empty" in one_line_error(result.stderr)


def test_a_server_with_cafile_requires_a_client_certificate(tmp_path: Path) -> None:
    ca = trustme.CA()
    server_pem, client_pem, ca_pem = (tmp_path / n for n in ("server.pem", "client.pem", "ca.pem"))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(server_pem))
    ca.issue_cert("client@example.org").private_key_and_cert_chain_pem.write_to_path(
        str(client_pem)
    )
    ca.cert_pem.write_to_path(str(ca_pem))
    with server("--certfile", str(server_pem), "--cafile", str(ca_pem)) as (serve, address):
        args = ["cat", "--cafile", str(ca_pem), "--expect", "1", address]
        good = run_cli(*args[:1], "--certfile", str(client_pem), *args[1:], stdin="m")
        assert good.returncode == 0, good.stderr
        assert good.stdout == b"m\n"
        bad = run_cli(*args, stdin="m")
        assert bad.returncode == 1
        assert "connection ended:" in one_line_error(bad.stderr)
        serve.err.expect(rb"left after [\d.]+ s: handshake failed: TLS handshake failed")


def test_serve_shows_the_librarys_warnings_and_with_verbose_its_debug_records() -> None:
    with server() as (serve, address), _connect(address) as sock:
        sock.sendall(b"\x00" * 12)  # a header that never ends
        serve.err.expect(rb"\d\d:\d\d:\d\d\] \S+: the peer broke the protocol: message header")
    with server("--verbose") as (serve, address), _connect(address) as sock:
        serve.err.expect(rb"accepted \S+")
        serve.err.expect(rb"\S+: opened \(Stocking\)")
        sock.sendall(b"\x82hi")
        assert sock.recv(16) == b"\x82hi"
        sock.shutdown(socket.SHUT_WR)
        assert _read_to_end(sock) == b""
        serve.err.expect(rb"\S+: ended: ")
