"""lanmesh: a site-to-site WireGuard mesh for router fleets."""
__version__ = "0.1.0"
