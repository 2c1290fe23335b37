"""An agent that serves the reference faithfully except for one injected fault, for the tests
that show a faulty implementation costs only the cases its fault touched.

    python -m tests.faulty_agent FAULT MARKER --kernel 6.12 --host mitigated [--starts FILE]

The fault fires once, on the second `run` request (or on `hello` for old-protocol); MARKER is
a file created when it fires, so the fresh agent the client starts afterwards behaves. Two
faults are not once-only: `hang-always` hangs on every `run` of every agent started (an
implementation that is simply hung), and `v1-only` is no fault at all but an agent of the
first protocol version, which ignores the version a client offers. `old-protocol` answers
the first hello with a version no client speaks. `--starts FILE` gets a
line for every agent started, so tests count agents, not seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from kvm_fwspec.conformance.guest.agent import Session
from kvm_fwspec.conformance.guest.wire import PROTOCOL_V1
from kvm_fwspec.conformance.reference_agent import reference_served

FAULTS = ("crash", "fatal", "hang", "garbage", "oversized", "truncated", "wrong-id")
FATAL = "FATAL: cannot open /dev/kvm: No such file or directory"
OTHER_MODES = ("old-protocol", "hang-always", "v1-only")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("fault", choices=FAULTS + OTHER_MODES)
    parser.add_argument("marker", type=Path)
    parser.add_argument("--kernel", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--oversize", type=int, default=4 << 20)
    parser.add_argument("--starts", type=Path, default=None)
    args = parser.parse_args()
    if args.starts is not None:
        with args.starts.open("a") as starts:
            starts.write(f"{os.getpid()}\n")
    session = Session(reference_served({"kernel": args.kernel, "host": args.host}))
    out = sys.stdout.buffer
    runs = 0
    for line in sys.stdin:
        request = json.loads(line)
        runs += request["method"] == "run"
        if args.fault == "hang-always" and request["method"] == "run":
            args.marker.touch()
            time.sleep(3600)
        if args.fault == "v1-only" and request["method"] == "hello":  # as agents before /2 did
            line = json.dumps({**request, "params": {**request["params"], "protocol": PROTOCOL_V1}})
        response, done = session(line)
        trigger = "hello" if args.fault == "old-protocol" else "run"
        fires = request["method"] == trigger and (trigger == "hello" or runs == 2)
        fires = fires and args.fault in (*FAULTS, "old-protocol")
        if fires and not args.marker.exists():
            args.marker.touch()
            inject(args.fault, response, out, args.oversize)
            continue
        out.write(json.dumps(response).encode() + b"\n")
        out.flush()
        if done:
            return


def inject(fault: str, response: dict[str, object], out: object, oversize: int) -> None:
    write = out.write  # type: ignore[attr-defined]
    text = json.dumps(response).encode()
    if fault == "crash":
        os._exit(3)
    if fault == "fatal":  # an implementation that reports why it gives up, as a real one would
        sys.stderr.write("starting the implementation\n" + FATAL + "\n")
        sys.stderr.flush()
        os._exit(1)
    if fault == "hang":
        time.sleep(3600)
    if fault == "garbage":
        write(b"\x00\xffthis is not json\n")
    if fault == "oversized":
        chunk = b"9" * (1 << 16)
        for _ in range(oversize // len(chunk) + 1):  # one endless line, never a newline
            write(chunk)
        time.sleep(3600)
    if fault == "truncated":
        write(text[: len(text) // 2])
        out.flush()  # type: ignore[attr-defined]
        os._exit(0)
    if fault == "old-protocol":
        write(
            json.dumps(
                {"id": response["id"], "result": {"protocol": "kvm-fwspec-agent/0"}}
            ).encode()
            + b"\n"
        )
    if fault == "wrong-id":
        write(json.dumps({**response, "id": 999999}).encode() + b"\n")
    out.flush()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
