#!/usr/bin/env python3
"""A small HTTP app for batond --exec tests: it serves on the sockets systemd's
convention passes (LISTEN_FDS from fd 3, LISTEN_PID its own pid) and says
READY=1 on NOTIFY_SOCKET, with switches for each misbehaviour a test needs.

  listen_fds_app.py [--tag T] [--ready notify|never] [--ready-after SECONDS]
                    [--ignore-term] [--nonblocking] [--exit-after-ready SECONDS]
                    [--env-file PATH]

Every response is "200 OK", body "tag=T pid=PID". --env-file writes, once
listening, a JSON object with what it was given (LISTEN_* and NOTIFY_SOCKET,
its pid, and the local address of each fd) so a test can check it.
"""
import argparse
import json
import os
import signal
import socket
import sys
import threading
import time


def notify(message):
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(message.encode(), address)


def serve(listener, body):
    while True:
        conn, _ = listener.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tag", default="app")
    p.add_argument("--ready", default="notify", choices=["notify", "never"])
    p.add_argument("--ready-after", type=float, default=0)
    p.add_argument("--ignore-term", action="store_true")
    p.add_argument("--nonblocking", action="store_true")
    p.add_argument("--exit-after-ready", type=float)
    p.add_argument("--env-file")
    args = p.parse_args()

    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        sys.exit("LISTEN_PID is %r, this is pid %d" % (os.environ.get("LISTEN_PID"), os.getpid()))
    count = int(os.environ["LISTEN_FDS"])
    listeners = [socket.socket(fileno=3 + i) for i in range(count)]
    if args.nonblocking:
        # Shared with every holder of the socket: a later batond must leave it so.
        for l in listeners:
            os.set_blocking(l.fileno(), False)
        listeners = []  # accepting on a non-blocking socket is not this app's business
    if args.env_file:
        info = {k: os.environ.get(k) for k in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET")}
        info["pid"] = os.getpid()
        info["pgid"] = os.getpgid(0)
        info["addresses"] = [str(l.getsockname()) for l in listeners]
        tmp = args.env_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(info, f)
        os.rename(tmp, args.env_file)
    body = ("tag=%s pid=%d" % (args.tag, os.getpid())).encode()
    for l in listeners:
        threading.Thread(target=serve, args=(l, body), daemon=True).start()
    print("listening on %d socket(s), tag %s" % (count, args.tag), flush=True)
    time.sleep(args.ready_after)
    if args.ready == "notify":
        notify("READY=1\nSTATUS=serving tag %s" % args.tag)
    if args.exit_after_ready is not None:
        time.sleep(args.exit_after_ready)
        print("exiting on purpose", file=sys.stderr, flush=True)
        os._exit(3)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
