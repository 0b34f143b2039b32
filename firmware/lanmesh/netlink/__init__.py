# Netlink for the data plane, without pyroute2 (see codec.py).
