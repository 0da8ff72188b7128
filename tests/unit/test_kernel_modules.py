"""Whether a tunnel module is there, read without loading it; which probes doctor runs."""
import pytest

from bpftools.kernel import modules
from bpftools.kernel.features import tunnel_probe
from bpftools.kernel.modules import ModuleState


def test_proc_modules_names():
    text = "ipip 16384 0 - Live 0x0000000000000000\ntunnel4 16384 1 ipip, Live 0x0\n"
    assert modules.loaded_modules(text) == {"ipip", "tunnel4"}


def test_modules_builtin_names():
    text = "kernel/net/ipv4/ipip.ko\nkernel/drivers/net/vxlan/vxlan.ko\nkernel/net/ipv4/ip-gre.ko\n"
    assert modules.builtin_modules(text) == {"ipip", "vxlan", "ip_gre"}


@pytest.mark.parametrize("line, value", [
    ("CONFIG_NET_IPIP=m", "m"), ("CONFIG_NET_IPIP=y", "y"), ("# CONFIG_NET_IPIP is not set", "n"),
    ("CONFIG_NET_IPIP_OTHER=y", None), ("", None)])
def test_kernel_config_values(line, value):
    assert modules.config_value(f"CONFIG_A=y\n{line}\n", "CONFIG_NET_IPIP") == value


def _never():
    raise AssertionError("created a device")


@pytest.mark.parametrize("state, load, ok, probed, created", [
    (modules.LOADED, False, True, True, True),
    (modules.BUILTIN, False, True, True, True),
    (modules.LOADABLE, False, True, False, False),  # there, but creating a device would load it
    (modules.LOADABLE, True, True, True, True),
    (modules.ABSENT, True, False, True, False),
])
def test_tunnel_probe_creates_a_device_only_where_that_loads_nothing(state, load, ok, probed, created):
    calls = []

    def create():
        calls.append(1)
        return "created a device of this type"

    probe = tunnel_probe("ipip_module", ModuleState("ipip", state, "detail"), load, create)
    assert (probe.ok, probe.probed, bool(calls)) == (ok, probed, created)
    assert (probe.loaded_module == "ipip") == (state == modules.LOADABLE and load)
    if state == modules.LOADABLE and not load:
        assert "--load-modules" in probe.detail


def test_module_state_reads_the_files(tmp_path, monkeypatch):
    (tmp_path / "proc_modules").write_text("vxlan 1 0 - Live 0x0\n")
    (tmp_path / "sys_module").mkdir()
    monkeypatch.setattr(modules, "PROC_MODULES", str(tmp_path / "proc_modules"))
    monkeypatch.setattr(modules, "SYS_MODULE", str(tmp_path / "sys_module"))
    monkeypatch.setattr(modules, "kernel_config", lambda release: "CONFIG_GENEVE=y\n# CONFIG_NET_IPIP is not set\n")
    monkeypatch.setattr(modules, "_modinfo", lambda module: "/lib/modules/x/sit.ko" if module == "sit" else None)
    states = {m: modules.module_state(m, sym, "0.0-test") for m, sym in
              [("vxlan", "CONFIG_VXLAN"), ("geneve", "CONFIG_GENEVE"), ("sit", "CONFIG_IPV6_SIT"),
               ("ipip", "CONFIG_NET_IPIP")]}
    assert {m: s.state for m, s in states.items()} == {
        "vxlan": modules.LOADED, "geneve": modules.BUILTIN, "sit": modules.LOADABLE, "ipip": modules.ABSENT}
    assert "CONFIG_NET_IPIP is not set" in states["ipip"].detail
