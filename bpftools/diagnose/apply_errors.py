"""What applying a fix to the model can answer instead of a changed state (apply_fix.py and the
models it delegates to, such as apply_tunnel.py), and the lookup every command starts with."""
from .state import Link, NetnsState


class Unmodelled(Exception):
    """The command (or one of its words) is not something the model can apply."""


class Refused(Unmodelled):
    """The kernel would refuse the command on this state (File exists, no such route or device):
    run, it fails, so it repairs nothing."""


def link_named(state: NetnsState, name: str) -> Link:
    """The device a command names; the kernel answers "Cannot find device" when there is none."""
    link = state.link_by_name(name)
    if link is None:
        raise Refused(f"no interface {name} in {state.name}")
    return link
