# The control socket: `lanmesh status` asks the running daemon over a unix socket at
# <run_dir>/<interface>.sock. One JSON request line, one JSON reply, then close.
import json
import os
import socket

MAX_REQUEST = 4096


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


def serve_one(server, handler):
    """Accept one client and answer it; never raises on a bad client."""
    try:
        conn, _ = server.accept()
    except BlockingIOError:
        return
    with conn:
        conn.settimeout(1.0)
        try:
            data = b""
            while b"\n" not in data and len(data) < MAX_REQUEST:
                chunk = conn.recv(MAX_REQUEST)
                if not chunk:
                    break
                data += chunk
            try:
                req = json.loads(data.decode() or "{}")
                reply = handler(req)
            except (ValueError, UnicodeDecodeError):
                reply = {"error": "bad request"}
            conn.sendall(json.dumps(reply).encode() + b"\n")
        except OSError:
            pass


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
    return json.loads(data.decode())
