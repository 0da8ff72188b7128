"""What applying a fix to the model can answer instead of a changed state (apply_fix.py and the
models it delegates to, such as apply_tunnel.py)."""


class Unmodelled(Exception):
    """The command (or one of its words) is not something the model can apply."""


class Refused(Unmodelled):
    """The kernel would refuse the command on this state (File exists, no such route or device):
    run, it fails, so it repairs nothing."""
