# `lanmesh console` (device agent) and `lanmesh provision` (host tool).


def register(sub, groups):
    from . import agent, provision
    agent.register(sub)
    provision.register(sub)
