# TLS for the router's MQTT session: a verifying client context and a non-blocking
# connection over an already-connected socket. On CPython it uses the `_ssl` extension
# directly: `ssl.py` on top of it costs ~2.1 MB RSS more (it builds a dozen enums at
# import) and the daemon needs none of it. `_ssl._SSLContext(PROTOCOL_TLS_CLIENT)` has
# the same secure defaults as ssl.SSLContext(PROTOCOL_TLS_CLIENT) — certificate and host
# name verified, TLS 1.2 minimum, CPython's cipher string — and `_wrap_socket` is what
# ssl.py's own wrap_socket calls. Where that private API is missing (another Python, or
# LANMESH_TLS=ssl) the public ssl module is used instead, with the same behaviour.
import os

try:
    if os.environ.get("LANMESH_TLS") == "ssl":
        raise ImportError("LANMESH_TLS=ssl")
    import _ssl as _impl
    _impl._SSLContext._wrap_socket          # noqa: B018 - the private API must be there
    PRIVATE = True
except (ImportError, AttributeError):
    import ssl as _impl
    PRIVATE = False

TLSError = _impl.SSLError
WantRead = _impl.SSLWantReadError
WantWrite = _impl.SSLWantWriteError
VerifyError = _impl.SSLCertVerificationError
Closed = _impl.SSLZeroReturnError


def client_context(ca_file=None, cert_file=None, key_file=None):
    """Verifies the server's certificate (against ca_file, else the system's CAs) and
    host name; offers a client certificate if given. OSError/TLSError on bad files."""
    ctx = (_impl._SSLContext if PRIVATE else _impl.SSLContext)(_impl.PROTOCOL_TLS_CLIENT)
    if ctx.verify_mode != _impl.CERT_REQUIRED or not ctx.check_hostname:
        raise TLSError("this Python's TLS client context does not verify by default")
    if ca_file:
        ctx.load_verify_locations(ca_file)
    else:
        ctx.set_default_verify_paths()
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file)
    return ctx


class Connection:
    """TLS over a connected non-blocking socket: handshake(), recv_into(), send() raise
    WantRead / WantWrite when they would block; recv_into() returns 0 at a clean close."""

    def __init__(self, ctx, sock, server_hostname):
        self.sock = sock
        if PRIVATE:
            self._tls = ctx._wrap_socket(sock, False, server_hostname)
        else:
            # ssl.SSLSocket takes the socket's file descriptor over (sock is detached)
            self._tls = self.sock = ctx.wrap_socket(sock, server_hostname=server_hostname,
                                                    do_handshake_on_connect=False)

    def fileno(self):
        return self.sock.fileno()

    def handshake(self):
        self._tls.do_handshake()

    def recv_into(self, buf):
        try:
            return self._tls.read(len(buf), buf) if PRIVATE else self._tls.recv_into(buf)
        except Closed:
            return 0

    def send(self, data):
        return self._tls.write(data) if PRIVATE else self._tls.send(data)

    def settimeout(self, seconds):
        self.sock.settimeout(seconds)

    def sendall(self, data):
        view = memoryview(data)
        while view:
            view = view[self.send(view):]

    def close(self):
        self.sock.close()
