# The control socket: `lanmesh status` asks the running daemon over a unix socket at
# <run_dir>/<interface>.sock (0600: root only). One JSON request line, one JSON reply, then
# close. Each client is a task of its own with one deadline for the whole exchange, so a
# client that trickles bytes or never reads its reply costs it, not the loop (the mesh's
# probes run on the same loop and a stall of ~0.75 s would drop links elsewhere).
import json
import os
import socket

from .. import aio, boundjson

MAX_REQUEST = 4096
CLIENT_DEADLINE_MS = 2000
MAX_CLIENTS = 8


def listen(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    os.chmod(path, 0o600)
    s.listen(4)
    s.setblocking(False)
    return s


def parse_request(data):
    """Request bytes → dict; ValueError for anything that is not one small JSON object."""
    req = boundjson.loads(data.strip() or b"{}", MAX_REQUEST, "request", max_depth=4)
    if not isinstance(req, dict):
        raise ValueError("request is not a JSON object")
    return req


async def serve(server, handler, stopped):
    """Accept clients until `stopped` is set; handler(request dict) -> reply dict."""
    clients = set()
    while not stopped.is_set():
        await aio.wait_readable(server)
        while True:
            try:
                conn, _ = server.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            if len(clients) >= MAX_CLIENTS:
                conn.close()            # busy: the client retries, the loop does not wait
                continue
            conn.setblocking(False)
            clients.add(conn)
            aio.create_task(_client(conn, handler, clients))


async def _client(conn, handler, clients):
    try:
        await aio.wait_for_ms(_exchange(conn, handler), CLIENT_DEADLINE_MS)
    except (aio.TimeoutError, OSError):
        pass                            # too slow, or gone: dropped
    finally:
        clients.discard(conn)
        conn.close()


async def _exchange(conn, handler):
    data = b""
    while b"\n" not in data and len(data) <= MAX_REQUEST:
        await aio.wait_readable(conn)
        chunk = conn.recv(MAX_REQUEST + 1)
        if not chunk:
            break
        data += chunk
    try:
        reply = handler(parse_request(data.split(b"\n", 1)[0]))
    except ValueError:
        reply = {"error": "bad request"}
    out = json.dumps(reply).encode() + b"\n"
    while out:
        try:
            out = out[conn.send(out):]
        except (BlockingIOError, InterruptedError):
            await aio.wait_writable(conn)


def request(path, req, timeout=5.0):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(json.dumps(req).encode() + b"\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    return boundjson.loads(data, 16 << 20, "daemon reply", max_depth=12)
