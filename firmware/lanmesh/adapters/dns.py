# Name lookups for peer endpoints and the broker. socket.getaddrinfo encodes a str host
# with the IDNA codec, whose import pulls in unicodedata and stringprep (~0.6 MB RSS, and
# on OpenWrt the python3-codecs package, ~1.7 MB of flash): an ASCII name is passed as
# bytes instead, which needs no codec. A non-ASCII name still works where the codec is
# installed, and says what is missing where it is not.
import socket


def getaddrinfo(host, port, socktype):
    if host.isascii():
        name = host.encode("ascii")
    else:
        try:
            name = host.encode("idna")
        except LookupError:
            raise socket.gaierror(socket.EAI_FAIL, f"{host!r} is not an ASCII name and this "
                                  "Python has no IDNA codec (OpenWrt: python3-codecs)") from None
    return socket.getaddrinfo(name, port, type=socktype)
