#!/usr/bin/env python3
"""Writes the seed corpora in tests/fuzz/corpus/<target>/ (committed; rerun
only to change them): a handful of small valid and near-valid inputs per
target. The fuzzer mutates from these; scripts/fuzz.sh copies them to a
scratch directory first, so fuzzing never adds files here.

    python3 tests/fuzz/make_seeds.py
"""

import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
MAGIC = 0x4241544E

HELLO, LISTENERS, LISTENERS_END, READY, COMMIT, DRAINING, CONNECTIONS, CONNECTIONS_ACK, SUCCEEDED = range(1, 10)


def frame(mtype, payload=b"", version=1, magic=MAGIC, length=None):
    if length is None:
        length = len(payload)
    return struct.pack(">IHHI", magic, version, mtype, length) + payload


def s(text):
    b = text.encode()
    return struct.pack(">H", len(b)) + b


def listeners(*entries):
    return struct.pack(">H", len(entries)) + b"".join(s(n) + s(c) + s(b) for n, c, b in entries)


def draining(*reports):
    return struct.pack(">H", len(reports)) + b"".join(struct.pack(">III", *r) for r in reports)


def connections(*entries):
    return struct.pack(">H", len(entries)) + b"".join(struct.pack(">IIH", i >> 32, i & 0xFFFFFFFF, k) for i, k in entries)


HANDOFF_FRAMES = {
    # valid
    "hello": frame(HELLO, struct.pack(">IH", 4242, 1)),
    "listeners-1": frame(LISTENERS, listeners(("echo", "tcp://127.0.0.1:0", "tcp://127.0.0.1:41234"))),
    "listeners-3": frame(
        LISTENERS,
        listeners(
            ("echo", "tcp://127.0.0.1:7000", "tcp://127.0.0.1:7000"),
            ("tcp://[::1]:7000", "tcp://[::1]:7000", "tcp://[::1]:7000"),
            ("control", "unix:/run/baton/control.sock", "unix:/run/baton/control.sock"),
        ),
    ),
    "listeners-end": frame(LISTENERS_END, struct.pack(">I", 3)),
    "ready": frame(READY, struct.pack(">I", 4242)),
    "commit": frame(COMMIT),
    "succeeded": frame(SUCCEEDED),
    "draining": frame(DRAINING, draining((100, 1, 17), (90, 0, 3))),
    "connections": frame(CONNECTIONS, connections((1, 1), (0x100000002, 2))),
    "connections-ack": frame(CONNECTIONS_ACK, connections((1, 1), (0x100000002, 0))),
    # near-valid
    "bad-magic": frame(HELLO, struct.pack(">IH", 4242, 1), magic=0x74686973),
    "bad-version": frame(HELLO, struct.pack(">IH", 4242, 1), version=2),
    "unknown-type": frame(10, b""),
    "length-too-large": frame(READY, struct.pack(">I", 1), length=61441),
    "length-mismatch": frame(READY, struct.pack(">I", 1), length=5),
    "header-truncated": frame(READY, struct.pack(">I", 1))[:11],
    "ready-trailing": frame(READY, struct.pack(">I", 1) + b"xyz"),
    "listeners-truncated-string": frame(LISTENERS, listeners(("echo", "tcp://127.0.0.1:0", "tcp://127.0.0.1:1"))[:-3]),
    "listeners-count-too-high": frame(LISTENERS, struct.pack(">H", 2) + listeners(("a", "unix:/a", "unix:/a"))[2:]),
    "connections-unknown-kind": frame(CONNECTIONS, connections((5, 3))),
    "connections-ack-adopted-2": frame(CONNECTIONS_ACK, connections((5, 2))),
    "draining-truncated": frame(DRAINING, draining((100, 1, 17))[:-2]),
}


# fuzz_handoff_channel: byte 0 = how to send (see the .cpp), then the datagram.
def channel(how, datagram):
    return bytes([how]) + datagram


CHANNEL = {
    "hello-no-fds": channel(0x00, HANDOFF_FRAMES["hello"]),
    "listeners-1-pipe": channel(0x01, HANDOFF_FRAMES["listeners-1"]),
    "listeners-3-sockets": channel(0x0B, HANDOFF_FRAMES["listeners-3"]),
    "connections-2-sockets": channel(0x0A, HANDOFF_FRAMES["connections"]),
    "commit-4-pipes": channel(0x04, HANDOFF_FRAMES["commit"]),
    "bad-magic-2-fds": channel(0x02, HANDOFF_FRAMES["bad-magic"]),
    "length-mismatch-3-fds": channel(0x03, HANDOFF_FRAMES["length-mismatch"]),
    "oversized-1-fd": channel(0x11, HANDOFF_FRAMES["ready"]),
    "ctrunc-3-fds": channel(0x23, HANDOFF_FRAMES["listeners-3"]),
    "passcred-2-fds": channel(0x42, HANDOFF_FRAMES["ready"]),
    "eof-after-message-1-fd": channel(0x81, HANDOFF_FRAMES["listeners-1"]),
    "empty-datagram-2-fds": channel(0x02, b""),
    "empty-datagram-eof": channel(0x80, b""),
    "header-truncated-1-fd": channel(0x01, HANDOFF_FRAMES["header-truncated"]),
}

CONTROL = {
    "status": b'{"v":1,"cmd":"status"}',
    "upgrade": b'{"v":1,"cmd":"upgrade","binary":"/usr/local/bin/batond","timeout":10}',
    "stop": b'{"v":1,"cmd":"stop","timeout":5}',
    "reload-no-version": b'{"cmd":"reload"}',
    "two-lines-crlf": b'{"v":1,"cmd":"status"}\r\n{"v":1,"cmd":"stop","timeout":0.5}\n',
    "bad-version": b'{"v":2,"cmd":"status"}',
    "version-not-integer": b'{"v":"1","cmd":"status"}',
    "unknown-command": b'{"v":1,"cmd":"restart"}',
    "relative-binary": b'{"v":1,"cmd":"upgrade","binary":"batond"}',
    "binary-on-stop": b'{"v":1,"cmd":"stop","binary":"/bin/true"}',
    "timeout-out-of-range": b'{"v":1,"cmd":"stop","timeout":86401}',
    "not-an-object": b'["status"]',
    "invalid-json": b'{"v":1,"cmd":"status"',
    "unicode-binary": b'{"v":1,"cmd":"upgrade","binary":"/opt/b\\u00e9ton/\\u0000x"}',
}

ADDRESSES = {
    "tcp4": b"tcp://127.0.0.1:7000",
    "tcp4-port0": b"tcp://0.0.0.0:0",
    "tcp6": b"tcp://[::1]:7000",
    "tcp6-mapped": b"tcp://[::ffff:10.0.0.1]:65535",
    "tcp6-long": b"tcp://[2001:0db8:0000:0000:0000:ff00:0042:8329]:80",
    "unix": b"unix:/run/baton/echo.sock",
    "unix-with-equals": b"unix:/tmp/a=b.sock",
    "named-tcp": b"echo=tcp://127.0.0.1:7000",
    "named-unix": b"ctl=unix:/tmp/a=b.sock",
    "named-odd": b"Echo_1.a:b/c-d=tcp://[::1]:1",
    "port-leading-zeros": b"tcp://127.0.0.1:007",
    "port-too-large": b"tcp://127.0.0.1:65536",
    "v6-without-brackets": b"tcp://::1:7000",
    "missing-port": b"echo=tcp://127.0.0.1",
    "hostname": b"tcp://localhost:7000",
    "unclosed-bracket": b"tcp://[::1:7000",
    "bad-name": b"bad name=tcp://127.0.0.1:1",
    "empty-name": b"=tcp://127.0.0.1:1",
    "unix-empty": b"unix:",
    "unix-107": b"unix:/" + b"p" * 106,
    "unix-108": b"unix:/" + b"p" * 107,
}

with open(os.path.join(HERE, "..", "..", "docs", "batond.toml"), "rb") as f:
    EXAMPLE_TOML = f.read()

CONFIG = {
    "example-full": EXAMPLE_TOML,
    "empty": b"",
    "minimal": b'log_level = "debug"\n',
    "listeners": b'[listeners]\necho = "tcp://127.0.0.1:7000"\necho6 = "tcp://[::1]:7000"\nlocal = "unix:/tmp/e.sock"\n',
    "inline-tables": b'drain = { mode = "handoff", timeout = 1.5 }\nupgrade = { timeout = 0.001, binary = "/bin/batond" }\n',
    "unknown-key": b'log_levl = "info"\n',
    "bad-drain-mode": b'[drain]\nmode = "later"\n',
    "out-of-range": b"max_connections = 0\nbacklog = 1000001\n",
    "wrong-types": b'max_connections = "many"\n[upgrade]\ntimeout = true\n',
    "listener-not-string": b"[listeners]\necho = 7000\n",
    "listener-reserved-name": b'[listeners]\ncontrol = "unix:/tmp/c.sock"\n',
    "listener-quoted-key": b'[listeners]\n"a b" = "tcp://127.0.0.1:1"\n',
    "listeners-not-table": b'listeners = "tcp://127.0.0.1:1"\n',
    "syntax-error": b"[drain\nmode = \n",
    "control-too-long": b'control = "/' + b"c" * 120 + b'"\n',
    "float-edge": b"[drain]\ntimeout = 86400.0000001\n[upgrade]\ntimeout = inf\n",
}

TARGETS = {
    "fuzz_handoff_frame": HANDOFF_FRAMES,
    "fuzz_handoff_channel": CHANNEL,
    "fuzz_control_request": CONTROL,
    "fuzz_listen_address": ADDRESSES,
    "fuzz_config_file": CONFIG,
}

for target, seeds in TARGETS.items():
    d = os.path.join(HERE, "corpus", target)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    print(f"{d}: {len(seeds)} seeds")
