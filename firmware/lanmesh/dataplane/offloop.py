# pyroute2's synchronous API drives an event loop of its own and fails on a thread whose
# asyncio loop is running (the daemon's): such calls go to a short-lived helper thread.
import threading


def off_loop(fn, *args):
    """fn(*args) here, or on a helper thread when this thread runs an asyncio loop."""
    import asyncio
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn(*args)
    box = {}

    def run():
        try:
            box["result"] = fn(*args)
        except BaseException as exc:    # re-raised on the caller's thread
            box["error"] = exc
    t = threading.Thread(target=run, name="lanmesh-netlink")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")
