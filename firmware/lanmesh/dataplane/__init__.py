# Data plane backends. Every backend has the same shape:
#   apply(LinkState)   make the OS match, idempotently; a partial failure is repaired by the next apply
#   peers() -> {public_key: PeerStatus}
#   supervise() -> bool   called from the loop; True if it had to repair something (e.g. restart wireguard-go)
#   close()            remove exactly what this backend added (link, routes, nft table)


def make_backend(kind, ifname, log=None, run_dir=None):
    """kind: 'kernel' | 'uapi' | 'auto' (kernel when the module is there, else uapi).
    run_dir: where the backend keeps what must outlive a crash (the sysctls it changed,
    wireguard-go's log)."""
    if kind == "auto":
        from .kernel import kernel_available
        kind = "kernel" if kernel_available() else "uapi"
    if kind == "kernel":
        from .kernel import KernelBackend
        backend = KernelBackend(ifname, log=log, run_dir=run_dir)
    elif kind == "uapi":
        from .uapi import UapiBackend
        backend = UapiBackend(ifname, log=log, run_dir=run_dir)
    else:
        from ..errors import ConfigError
        raise ConfigError(f"backend: {kind!r} is not one of 'auto', 'kernel', 'uapi'")
    backend.kind = kind
    return backend
