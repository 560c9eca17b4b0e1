"""Two hosts joined by a real network link, for the tests of tests/io/test_netns_*.py.

This process stays in its own network namespace (the first host); a new
namespace, joined to it by a veth pair, is the second host, where a peer
process (tests/io/netns_peer.py) runs. The link can be cut and restored (a
partition: packets vanish, no FIN, no RST), and the second host can be
restarted (its process and every socket it had are gone, a new one takes the
address). Everything is torn down when the test ends, whatever happened.

The addresses are a /30 of 10.213.0.0/16 chosen from the process id, so that
runs side by side do not clash; they exist only on the veth pair. An
"unreachable" route for the same /30, below the link's own route, makes sure
that a packet for the peer never leaves through another interface once the
link is gone.

Where namespaces cannot be made (not Linux, not root, no ``ip``, a sandbox
that refuses them) the tests skip, saying why; with
``STOCKINGS_REQUIRE_NETNS=1`` (CI sets it) they fail instead.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from netns_peer import PEER_PORT

__all__ = ["PEER_PORT", "REFUSED_PORT", "NetnsHost", "Peer", "netns_host", "netns_unavailable"]

PEER_SCRIPT = Path(__file__).with_name("netns_peer.py")

#: Nothing listens on this port of the peer host.
REFUSED_PORT = PEER_PORT + 1
_NAME_PREFIX = "stockings-"
_counter = itertools.count()
_SUBNETS = ipaddress.ip_network("10.213.0.0/16")
_SUBNET_COUNT = _SUBNETS.num_addresses // 4
_unavailable: str | bool | None = False  # False: not checked yet


def _ip_binary() -> str | None:
    return shutil.which("ip") or next(
        (p for p in ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip") if os.access(p, os.X_OK)), None
    )


IP = _ip_binary() or "ip"
TC = shutil.which("tc") or next(
    (p for p in ("/usr/sbin/tc", "/sbin/tc") if os.access(p, os.X_OK)), "tc"
)


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command (``ip``, ``tc``...), failing with its stderr when ``check``."""
    result = subprocess.run(args, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {result.stderr.strip()}")
    return result


def netns_unavailable() -> str | None:
    """Why network namespaces cannot be used here, or ``None`` when they can."""
    global _unavailable
    if _unavailable is not False:
        return _unavailable  # type: ignore[return-value]
    reason: str | None = None
    if not sys.platform.startswith("linux"):
        reason = "network namespaces are a Linux feature"
    elif os.geteuid() != 0:
        reason = "network namespaces need root (ip netns add)"
    elif _ip_binary() is None:
        reason = "the ip command (iproute2) is not installed"
    else:
        probe = f"{_NAME_PREFIX}probe-{os.getpid()}"
        result = run(IP, "netns", "add", probe, check=False)
        if result.returncode != 0:
            reason = f"ip netns add is not allowed here: {result.stderr.strip()}"
        else:
            run(IP, "netns", "del", probe, check=False)
    _unavailable = reason
    return reason


def require_netns() -> None:
    """Skip the test (or fail it, under STOCKINGS_REQUIRE_NETNS=1) without namespaces."""
    reason = netns_unavailable()
    if reason is None:
        return
    if os.environ.get("STOCKINGS_REQUIRE_NETNS") == "1":
        pytest.fail(f"STOCKINGS_REQUIRE_NETNS=1 but {reason}")
    pytest.skip(reason)


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # A zombie (state Z) has ended; it only waits for its parent.
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def remove_stale_namespaces() -> None:
    """Delete the namespaces of earlier runs whose process is gone (say, killed by a signal)."""
    listing = run(IP, "netns", "list", check=False).stdout
    for match in re.finditer(rf"^{_NAME_PREFIX}(\d+)-(\d+)-\d+", listing, re.MULTILINE):
        pid, number = int(match.group(1)), int(match.group(2))
        if not _pid_alive(pid):
            namespace = match.group(0)
            inside = run(IP, "-n", namespace, "-4", "-o", "addr", "show", check=False).stdout
            for address in re.findall(r"inet (10\.213\.[\d.]+/30)", inside):
                subnet = ipaddress.ip_interface(address).network
                run(IP, "route", "del", "unreachable", str(subnet), "metric", "4000", check=False)
            run(IP, "link", "del", _link_names(pid, number)[0], check=False)
            run(IP, "netns", "del", namespace, check=False)


def _link_names(pid: int, number: int) -> tuple[str, str]:
    """The names of the two ends of a run's link (at most 15 characters each)."""
    tag = f"sk{pid % 10_000_000}n{number % 1000}"
    return f"{tag}a", f"{tag}b"


def _free_subnet(start: int) -> ipaddress.IPv4Network:
    """A /30 of 10.213.0.0/16 that no address or route here uses yet."""
    used = run(IP, "-4", "addr", "show").stdout + run(IP, "-4", "route", "show").stdout
    for step in range(_SUBNET_COUNT):
        index = (start + step) % _SUBNET_COUNT
        subnet = ipaddress.ip_network(f"{_SUBNETS[index * 4]}/30")
        if f"{subnet[1]}/" not in used and f"{subnet} " not in used:
            return subnet  # type: ignore[return-value]
    raise RuntimeError("no free /30 in 10.213.0.0/16")


def _mac(link: str) -> str:
    match = re.search(r"link/ether ([0-9a-f:]{17})", link)
    if match is None:
        raise RuntimeError(f"no MAC address in {link!r}")
    return match.group(1)


class Peer:
    """A process running tests/io/netns_peer.py on the other host, talked to by lines of text."""

    def __init__(self, namespace: str, args: list[str], log: Path) -> None:
        self.log = log
        self._stderr = log.open("ab")
        self.process = subprocess.Popen(
            [IP, "netns", "exec", namespace, sys.executable, "-u", str(PEER_SCRIPT), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(
            target=self._read_lines, name=f"netns-peer-{self.process.pid}", daemon=True
        )
        self._reader.start()

    def _read_lines(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def expect(self, word: str, timeout: float = 20.0) -> list[str]:
        """Wait for the peer's next line, check that it starts with ``word``, return the rest."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"the peer said nothing for {timeout} s; {self.stderr()}"
            ) from None
        if line is None:
            raise AssertionError(f"the peer ended ({self.process.poll()}); {self.stderr()}")
        words = line.split()
        if not words or words[0] != word:
            raise AssertionError(f"expected {word!r} from the peer, got {line!r}; {self.stderr()}")
        return words[1:]

    def stderr(self) -> str:
        self._stderr.flush()
        text = self.log.read_text(errors="replace").strip()
        return f"its stderr: {text[-3000:]}" if text else "no stderr"

    def kill(self) -> None:
        """Kill the process at once: no goodbye, its sockets closed by its kernel."""
        if self.process.poll() is None:
            # ip netns exec execs the command, so this pid is the Python process.
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        self._reader.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()


class NetnsHost:
    """The second host: a network namespace joined to this one by a veth link.

    Attributes:
        address: the peer host's address, reachable from this process.
        local_address: this end's address on the link.
    """

    def __init__(self, tmp_path: Path) -> None:
        remove_stale_namespaces()
        pid = os.getpid()
        number = next(_counter)
        self._tmp = tmp_path
        self._generation = 0
        self.namespace = f"{_NAME_PREFIX}{pid}-{number}-0"
        self.outer, self.inner = _link_names(pid, number)
        subnet = _free_subnet(pid * 7 + number)
        self._subnet = subnet
        self.local_address = str(subnet[1])
        self.address = str(subnet[2])
        self.peers: list[Peer] = []
        self._made_link = self._made_route = False
        self._namespaces = [self.namespace]
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        run(IP, "netns", "add", self.namespace)
        run(IP, "route", "add", "unreachable", str(self._subnet), "metric", "4000")
        self._made_route = True
        run(IP, "link", "add", self.outer, "type", "veth", "peer", "name", self.inner)
        self._made_link = True
        run(IP, "addr", "add", f"{self.local_address}/30", "dev", self.outer)
        run(IP, "link", "set", self.outer, "up")
        self._set_up_inner(self.namespace, move=True)

    def _set_up_inner(self, namespace: str, move: bool) -> None:
        if move:
            run(IP, "link", "set", self.inner, "netns", namespace)
        self.inside("ip", "addr", "add", f"{self.address}/30", "dev", self.inner, ns=namespace)
        self.inside("ip", "link", "set", "lo", "up", ns=namespace)
        self.inside("ip", "link", "set", self.inner, "up", ns=namespace)
        self._pin_neighbours(namespace)

    def _pin_neighbours(self, namespace: str) -> None:
        # Fixed link-layer addresses on both ends, as for a peer behind a
        # router that stays up: otherwise this end forgets the peer's MAC
        # when the carrier drops, and the failing ARP makes the kernel
        # report "no route to host", which no remote host's failure causes.
        outer_mac = _mac(run(IP, "-o", "link", "show", "dev", self.outer).stdout)
        inner_mac = _mac(self.inside("ip", "-o", "link", "show", "dev", self.inner, ns=namespace))
        run(IP, "neigh", "replace", self.address, "lladdr", inner_mac, "dev", self.outer,
            "nud", "permanent")  # fmt: skip
        self.inside("ip", "neigh", "replace", self.local_address, "lladdr", outer_mac,
                    "dev", self.inner, "nud", "permanent", ns=namespace)  # fmt: skip

    def inside(self, *command: str, ns: str | None = None, check: bool = True) -> str:
        """Run a command in the peer host's namespace; return its output."""
        tool = {"ip": IP, "tc": TC}.get(command[0], command[0])
        return run(
            IP, "netns", "exec", ns or self.namespace, tool, *command[1:], check=check
        ).stdout

    def peer(self, *args: str) -> Peer:
        """Start tests/io/netns_peer.py with ``args`` on the peer host; wait for its "ready"."""
        log = self._tmp / f"peer-{len(self.peers)}.log"
        peer = Peer(self.namespace, list(args), log)
        self.peers.append(peer)
        peer.expect("ready")
        return peer

    def partition(self) -> None:
        """Cut the link at the peer's end: from now on every packet is dropped, none refused.

        The interface goes down on the peer host, so nothing it sends leaves
        and nothing reaches it. This end's interface merely loses its
        carrier: its route stays and packets sent to the peer are silently
        dropped, as when a remote host loses power.
        """
        self.inside("ip", "link", "set", self.inner, "down")

    def heal(self) -> None:
        """Bring the link back up, as it was."""
        self.inside("ip", "link", "set", self.inner, "up")
        self._pin_neighbours(self.namespace)

    def restart(self) -> None:
        """Turn the peer host off and on again: its processes and sockets are gone.

        The link is cut first, so that nothing the dying processes' kernel
        says (FIN, RST) reaches this host; then every peer is killed, the
        namespace is replaced by a fresh one, and the same interface and
        address move into it.
        """
        self.partition()
        for peer in self.peers:
            peer.kill()
        self._generation += 1
        old = self.namespace
        self.namespace = re.sub(r"-\d+$", f"-{self._generation}", old)
        run(IP, "netns", "add", self.namespace)
        self._namespaces.append(self.namespace)
        self.inside("ip", "link", "set", self.inner, "netns", self.namespace, ns=old)
        run(IP, "netns", "del", old)
        self._namespaces.remove(old)
        self._set_up_inner(self.namespace, move=False)

    def netem(self, *spec: str) -> None:
        """Add a ``tc netem`` qdisc on both ends of the link, or skip the test without it.

        Kernels built without ``sch_netem`` (some virtual machines' have no
        modules at all) refuse it: "Specified qdisc kind is unknown".
        """
        if not os.access(TC, os.X_OK):
            pytest.skip("tc netem: the tc command (iproute2) is not installed")
        for ns, device in ((None, self.outer), (self.namespace, self.inner)):
            command = [TC, "qdisc", "add", "dev", device, "root", "netem", *spec]
            if ns is not None:
                command = [IP, "netns", "exec", ns, *command]
            result = run(*command, check=False)
            if result.returncode != 0:
                pytest.skip(
                    "tc netem is not available: this kernel has no sch_netem"
                    f" ({' '.join(command[-len(spec) - 6 :])}: {result.stderr.strip()})"
                )

    def close(self) -> None:
        """Kill every peer and remove the link, the route and the namespaces."""
        for peer in self.peers:
            with contextlib.suppress(Exception):
                peer.kill()
        if self._made_link:
            # Deleting one end of a veth pair deletes both.
            run(IP, "link", "del", self.outer, check=False)
        for namespace in self._namespaces:
            run(IP, "netns", "del", namespace, check=False)
        if self._made_route:
            run(IP, "route", "del", "unreachable", str(self._subnet), "metric", "4000", check=False)


@contextlib.contextmanager
def netns_host(tmp_path: Path) -> Iterator[NetnsHost]:
    """A :class:`NetnsHost` for one test, torn down when it ends however it ends."""
    require_netns()
    host = NetnsHost(tmp_path)
    try:
        yield host
    finally:
        host.close()
