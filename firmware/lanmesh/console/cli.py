# `lanmesh console`: the device agent (router side; `lanmesh provision` is the operator's).


def register(sub, groups):
    from . import agent
    agent.register(sub)
