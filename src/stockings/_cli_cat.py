"""``stockings cat``: send stdin as messages, show the messages that come back.

Three threads: the main thread sends what stdin gives and decides when to
stop; a daemon thread reads stdin, so that the peer closing ends the
session even while stdin is still open (a read on a terminal or a pipe
cannot be interrupted portably); and a printer thread shows each message
as it arrives. The main thread waits on one condition that the other two
notify, so a Ctrl-C always lands on it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections import deque
from typing import Any

from ._cli_common import (
    CliError,
    client_tls,
    describe_end,
    describe_error,
    is_fd_terminal,
    is_terminal,
    notice,
    stdin_fd,
    stocking_class,
)
from ._cli_output import escape_text, show_bytes, show_text
from ._client import connect, describe_address
from ._errors import ConnectionClosed, EndReason, MessageTooLarge
from ._stocking import Stocking
from ._sync import join_thread, wait_for_condition

__all__ = ["PROMPT", "run_cat"]

#: What an interactive session shows when it waits for a line.
PROMPT = "> "
#: How many bytes of stdin may wait to be sent before reading it pauses.
INPUT_BACKLOG = 16 * 1024 * 1024
#: How long closing may spend sending what was written, in seconds.
CLOSE_TIMEOUT = 10.0


class Session:
    """The state the three threads share, under one condition."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.records: deque[bytes] = deque()
        self.queued = 0
        self.input_done = False
        self.input_error: OSError | None = None
        self.peer_done = False
        self.received = 0
        self.failure: BaseException | None = None

    def add_record(self, record: bytes) -> None:
        with self.changed:
            # Stdin can be read far faster than the network drains: pause.
            wait_for_condition(self.changed, lambda: self.queued < INPUT_BACKLOG or self.peer_done)
            self.records.append(record)
            self.queued += len(record)
            self.changed.notify_all()

    def end_input(self, error: OSError | None = None) -> None:
        with self.changed:
            self.input_done = True
            self.input_error = error
            self.changed.notify_all()

    def take_records(self) -> list[bytes]:
        """Everything read so far (condition held)."""
        records = list(self.records)
        self.records.clear()
        self.queued = 0
        self.changed.notify_all()
        return records


def _read_input(fd: int, separator: bytes, session: Session) -> None:
    """Split what descriptor ``fd`` gives into records (daemon thread)."""
    pending = bytearray()
    searched = 0
    while True:
        error: OSError | None = None
        try:
            # os.read, not sys.stdin: a daemon thread blocked inside a
            # buffered reader's lock would stall the interpreter's exit.
            chunk = os.read(fd, 65536)
        except OSError as exc:
            # A terminal that went away (EIO) ends the input like Ctrl-D.
            error = None if is_fd_terminal(fd) else exc
            chunk = b""
        if not chunk:
            if pending:
                session.add_record(bytes(pending))
            session.end_input(error)
            return
        pending += chunk
        while True:
            at = pending.find(separator, searched)
            if at < 0:
                searched = max(0, len(pending) - len(separator) + 1)
                break
            session.add_record(bytes(pending[:at]))
            del pending[: at + len(separator)]
            searched = 0


class Display:
    """Writes received messages to stdout, safe on a terminal, exact in a pipe."""

    def __init__(self, args: argparse.Namespace, interactive: bool) -> None:
        self.stream = sys.stdout
        self.tty = is_terminal(sys.stdout)
        self.safe = self.tty and not args.raw
        self.pretty_json = args.json
        self.end = b"\0" if args.null else b"\n"
        self.prompt = interactive
        self.prompt_shown = False
        self.lock = threading.Lock()
        self.encoding = getattr(sys.stdout, "encoding", None) or "utf-8"

    def show(self, message: Any) -> None:
        if isinstance(message, str):
            text = show_text(message, self.pretty_json)
            data = (escape_text(text) if self.safe else text).encode(
                self.encoding, "backslashreplace"
            )
        elif self.safe:
            data = show_bytes(bytes(message)).encode(self.encoding, "backslashreplace")
        else:
            data = bytes(message)
        with self.lock:
            self._clear_prompt()
            self.stream.flush()
            self.stream.buffer.write(data + self.end)
            self.stream.buffer.flush()
            self._show_prompt()

    def show_prompt(self) -> None:
        with self.lock:
            self._show_prompt()

    def _show_prompt(self) -> None:
        if self.prompt and not self.prompt_shown:
            sys.stderr.write(PROMPT)
            sys.stderr.flush()
            self.prompt_shown = True

    def _clear_prompt(self) -> None:
        if self.prompt_shown:
            # Start the message on a line of its own, over the prompt.
            sys.stderr.write("\r\x1b[K" if is_terminal(sys.stderr) else "\n")
            sys.stderr.flush()
            self.prompt_shown = False

    def typed(self) -> None:
        """The person pressed Enter: the prompt on the screen is used up."""
        with self.lock:
            self.prompt_shown = False

    def finish(self) -> None:
        with self.lock:
            if self.prompt_shown:
                sys.stderr.write("\n")
                sys.stderr.flush()
                self.prompt_shown = False


def _print_messages(stocking: Stocking, display: Display, session: Session) -> None:
    """Show each message as it arrives until the stocking ends (printer thread)."""
    try:
        for message in stocking:
            display.show(message)
            with session.changed:
                session.received += 1
                session.changed.notify_all()
    except ConnectionClosed:
        pass  # the end notice says why, from end_reason and end_exception
    except BaseException as exc:  # stdout gone, say: the main thread reports it
        with session.changed:
            session.failure = exc
    finally:
        with session.changed:
            session.peer_done = True
            session.changed.notify_all()


def _to_message(record: bytes, number: int, args: argparse.Namespace, encoding: str) -> Any:
    """Turn one record of input into the message to send; ``None`` to skip it."""
    if args.bytes:
        return record
    try:
        text = record.decode(encoding)
    except UnicodeDecodeError as exc:
        what = "the file" if args.file else f"input record {number}"
        raise CliError(f"{what} is not valid {encoding} text ({exc.reason}); use --bytes") from exc
    if not args.null and text.endswith("\r"):
        text = text[:-1]  # a line of a Windows text file
    if args.json:
        text = text.strip()
        if not text:
            return None
        try:
            json.loads(text)
        except ValueError as exc:
            raise CliError(f"input line {number} is not JSON: {exc}") from exc
    return text


def _send(stocking: Stocking, message: Any, number: int) -> bool:
    """Send one message; False once the connection is over."""
    try:
        stocking.write(message)
    except ConnectionClosed:
        return False
    except MessageTooLarge as exc:
        raise CliError(
            f"message {number} is too large: {exc}; raise the limit with --max-message-size"
        ) from exc
    return True


def _read_file(path: str) -> bytes:
    try:
        if path == "-":
            chunks = []
            while chunk := os.read(stdin_fd(), 1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise CliError(f"cannot read --file {path}: {describe_error(exc)}", 2) from exc


def _wait_for_handshake(stocking: Stocking, timeout: float) -> None:
    if not stocking.wait_handshake(timeout):
        if not stocking.ended:
            stocking.abort()
        raise CliError(f"connection ended: {describe_end(stocking)}")


def run_cat(args: argparse.Namespace) -> int:
    """Run ``stockings cat``; see its ``--help``."""
    if args.null and args.json:
        raise CliError("--null and --json do not go together: JSON input is one value a line", 2)
    host, port = args.address
    where = describe_address((host, port))
    context = client_tls(args)
    cls, kwargs = stocking_class(args, server_side=False)
    file_data = _read_file(args.file) if args.file else None
    try:
        stocking = connect(
            (host, port), timeout=args.connect_timeout, ssl=context, cls=cls, **kwargs
        )
    except (OSError, ValueError) as exc:
        raise CliError(describe_error(exc)) from exc
    try:
        if args.authkey_file:
            _wait_for_handshake(stocking, args.connect_timeout)
        extra = " over TLS" if context is not None else ""
        notice("cat", f"connected to {where}{extra}")
        return _converse(stocking, args, file_data)
    except BaseException:
        # Interrupted or failed: drop what is still queued rather than wait on the peer.
        stocking.abort()
        raise


def _converse(stocking: Stocking, args: argparse.Namespace, file_data: bytes | None) -> int:
    session = Session()
    interactive = file_data is None and is_fd_terminal(stdin_fd())
    display = Display(args, interactive)
    printer = threading.Thread(
        target=_print_messages, args=(stocking, display, session), name="stockings-cat-printer"
    )
    encoding = "utf-8" if file_data is not None or args.json else _input_encoding()
    sent = 0
    printer.start()
    try:
        if file_data is not None:
            message = _to_message(file_data, 1, args, "utf-8")
            if message is not None and _send(stocking, message, 1):
                sent = 1
            session.end_input()
        else:
            reader = threading.Thread(
                target=_read_input,
                args=(stdin_fd(), b"\0" if args.null else b"\n", session),
                name="stockings-cat-stdin",
                daemon=True,
            )
            reader.start()
            display.show_prompt()
            sent = _send_input(stocking, args, session, display, encoding)
        with session.changed:
            if session.input_error is not None:
                raise CliError(f"cannot read stdin: {describe_error(session.input_error)}")
        _wait_for_replies(stocking, args, session)
        display.finish()
        stocking.close(timeout=CLOSE_TIMEOUT)
    except BaseException:
        # The printer ends once the stocking has: make sure it does.
        stocking.abort()
        raise
    finally:
        join_thread(printer, None)
    if session.failure is not None:
        raise session.failure
    reason = stocking.end_reason
    counts = f"sent {sent}, received {session.received}"
    hint = "; --max-message-size raises the limit" if reason is EndReason.MESSAGE_TOO_LARGE else ""
    notice("cat", f"connection ended: {describe_end(stocking)} ({counts}){hint}")
    return 0 if reason is None or reason.clean else 1


def _input_encoding() -> str:
    return getattr(sys.stdin, "encoding", None) or "utf-8"


def _send_input(
    stocking: Stocking,
    args: argparse.Namespace,
    session: Session,
    display: Display,
    encoding: str,
) -> int:
    """Send stdin's records until it ends or the connection does; return how many."""
    number = sent = 0
    while True:
        with session.changed:
            wait_for_condition(
                session.changed,
                lambda: session.records or session.input_done or session.peer_done,
            )
            if session.peer_done:
                return sent
            records = session.take_records()
            done = session.input_done and not session.records
        for record in records:
            number += 1
            display.typed()
            try:
                message = _to_message(record, number, args, encoding)
            except CliError as exc:
                if not display.prompt:
                    raise
                # A typo at the prompt should not end the session.
                notice("cat", str(exc))
                continue
            if message is not None:
                if not _send(stocking, message, number):
                    return sent
                sent += 1
        if done:
            return sent
        display.show_prompt()


def _wait_for_replies(stocking: Stocking, args: argparse.Namespace, session: Session) -> None:
    """After the input ends: wait for ``--expect`` messages, or for a quiet ``--wait``."""
    with session.changed:
        if args.expect is not None:
            wait_for_condition(
                session.changed, lambda: session.received >= args.expect or session.peer_done
            )
            return
        # Stop once a whole --wait passes with no new message.
        while not session.peer_done:
            seen = session.received

            def moved(seen: int = seen) -> bool:
                return session.received != seen or session.peer_done

            if not wait_for_condition(session.changed, moved, args.wait):
                return
