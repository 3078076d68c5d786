#!/usr/bin/env python3
"""Drives an interactive shell session under a real pty, as a user at a terminal would.

    pty_session.py CMD [ARGS...]

Runs CMD (e.g. `podman run -it IMG sh`) with a new pty as its controlling terminal and
stdio, waits for the shell's prompt, types `echo $((6*7))`, waits for 42, types `exit 3`
and reads until the session ends. Prints what the terminal showed (\\r removed) and exits
with CMD's status; 124 if a step timed out. The arithmetic makes the answer appear only
if the shell in the container evaluated the line (the typed text contains no "42").
"""
import os
import pty
import select
import sys
import time

TIMEOUT = float(os.environ.get("VESSEL_PTY_SESSION_TIMEOUT", "180"))


def main():
    pid, master = pty.fork()
    if pid == 0:
        os.execvp(sys.argv[1], sys.argv[1:])
    seen = b""

    def read_until(pred, what):
        nonlocal seen
        deadline = time.monotonic() + TIMEOUT
        while not pred(seen):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(what)
            r, _, _ = select.select([master], [], [], left)
            if not r:
                continue
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the session ended
                data = b""
            if not data:
                raise EOFError(what)
            seen += data

    status = 124
    try:
        read_until(lambda s: b"# " in s or b"$ " in s, "prompt")
        os.write(master, b"echo $((6*7))\r")
        read_until(lambda s: b"\n42" in s.replace(b"\r", b""), "42")
        os.write(master, b"exit 3\r")
        try:
            read_until(lambda s: False, "end")
        except EOFError:
            pass
        _, ws = os.waitpid(pid, 0)
        status = os.waitstatus_to_exitcode(ws)
        if status < 0:
            status = 128 - status
    except (TimeoutError, EOFError) as e:
        sys.stderr.write(f"pty_session: no {e} from {sys.argv[1:]}\n")
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except OSError:
            pass
    sys.stdout.write(seen.decode(errors="replace").replace("\r", ""))
    sys.stdout.flush()
    sys.exit(status)


if __name__ == "__main__":
    main()
