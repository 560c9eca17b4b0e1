"""An echo client: send each argument as a message and print what comes back.

python examples/echo_client.py 127.0.0.1:8765 hello "how are you"
"""

from __future__ import annotations

import argparse
import sys

import stockings
from _common import host_port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address", type=host_port, metavar="HOST:PORT")
    parser.add_argument("messages", nargs="+")
    args = parser.parse_args()
    with stockings.connect(args.address, timeout=10) as stocking:
        for message in args.messages:
            stocking.write(message)
        for _ in args.messages:
            echo = stocking.read(timeout=10)
            if echo is None:  # no answer in time, or the server went away
                print(f"no echo: {stocking.end_reason}", file=sys.stderr)
                return 1
            print(echo)
    return 0


if __name__ == "__main__":
    sys.exit(main())
