"""An echo server and client over TLS, with certificates from files.

The server needs a certificate chain and its key; the client checks the
server's certificate against a CA file (or, without ``--cafile``, the
system's CAs) and the host name. The TLS handshake runs on the I/O thread.

    python examples/tls_echo.py serve --cert server.pem --key server.key --port 8765
    python examples/tls_echo.py connect localhost:8765 --cafile ca.pem hello

For test certificates: ``pip install trustme`` and
``python -m trustme -i localhost``, which writes server.pem, server.key and
client.pem (the CA) to the current folder.
"""

from __future__ import annotations

import argparse
import ssl
import sys

import stockings
from _common import announce, host_port, stop_on_sigterm
from echo_server import serve as echo


def server_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.options |= ssl.OP_NO_RENEGOTIATION
    return context


def client_context(cafile: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=cafile)  # verifies host and chain
    context.options |= ssl.OP_NO_RENEGOTIATION
    return context


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve")
    serve_parser.add_argument("--cert", required=True, help="certificate chain (PEM)")
    serve_parser.add_argument("--key", required=True, help="private key (PEM)")
    serve_parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    connect_parser = commands.add_parser("connect")
    connect_parser.add_argument("address", type=host_port, metavar="HOST:PORT")
    connect_parser.add_argument("--cafile", help="trust this CA instead of the system's")
    connect_parser.add_argument("messages", nargs="+")
    args = parser.parse_args()

    if args.command == "serve":
        stop_on_sigterm()
        context = server_context(args.cert, args.key)
        # A stalled TLS handshake is cut off only by a timeout you choose.
        with stockings.Server(("127.0.0.1", args.port), ssl=context, idle_timeout=30) as server:
            announce(server.address)
            try:
                echo(server)
            except KeyboardInterrupt:
                pass
        return 0

    context = client_context(args.cafile)
    with stockings.connect(args.address, timeout=10, ssl=context) as stocking:
        try:
            for message in args.messages:
                stocking.write(message)  # queued until the TLS handshake is done
        except stockings.ConnectionClosed:
            pass  # it ended already (a refused certificate, say): told below
        for _ in args.messages:
            echo_ = stocking.read(timeout=10)
            if echo_ is None:
                print(f"no echo: {stocking.end_reason}: {stocking.end_exception}", file=sys.stderr)
                return 1
            print(echo_)
    return 0


if __name__ == "__main__":
    sys.exit(main())
