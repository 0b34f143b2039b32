# The operator's side (a laptop or server, never a router): the fleet controller and its
# registry, the broker configuration, `lanmesh fleet|doc sign|provision`. Nothing here ships to
# a router; nothing on the router imports it.
