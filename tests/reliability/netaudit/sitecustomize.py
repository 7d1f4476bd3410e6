"""Network audit for child processes: with this folder on PYTHONPATH and GENLAB_NET_AUDIT=<file>, every
Python process started (genlab, its DDP ranks, any Python helper) appends each name lookup and each
connect to a non-loopback address to <file>, one per line. Used by tests/reliability/test_no_network.py.

An audit hook sees lookups made from any thread, including library telemetry threads; it cannot see
non-Python processes (wandb's Go service): the test traces those with strace when it is installed.
"""
import ipaddress
import os
import sys

_LOG = os.environ.get("GENLAB_NET_AUDIT")
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback", ""}


def _local(host) -> bool:
    if host is None:
        return True
    host = host.decode() if isinstance(host, bytes) else str(host)
    if host.lower().rstrip(".") in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _hook(event, args):
    if event == "socket.getaddrinfo":
        target = args[0]
    elif event == "socket.connect" and isinstance(args[1], tuple):
        target = args[1][0]
    elif event in ("socket.gethostbyname", "socket.gethostbyname_ex", "socket.gethostbyaddr"):
        target = args[0]
    else:
        return
    if _local(target):
        return
    try:
        with open(_LOG, "a") as fh:
            fh.write(f"{os.getpid()} {event} {target!r} {' '.join(sys.argv[:2])}\n")
    except OSError:
        pass


if _LOG:
    sys.addaudithook(_hook)
