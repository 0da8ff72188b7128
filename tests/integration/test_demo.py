"""`bpftools demo` (the main job) end to end: each lab network is broken, diagnosed with the
right cause, fixed with the diagnosis' own commands so the ping works, and removed."""
import re
import subprocess

from bpftools_proc import cli


def lab_namespaces(prefix: str = "bpftlab-demo") -> set:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith(prefix)}


def test_demo_diagnoses_fixes_and_cleans_up():
    proc = cli("demo", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    docker = "== docker: container bpftools-demo-" in out  # where a Docker Engine answers
    overlay = "(no overlay-l2 story: " not in out            # where the kernel has vxlan
    assert out.count("  ping works") == 3 + overlay + docker, out
    # one assert a line, each showing the whole output when it fails
    for expected in ("it breaks in bpftlab-demo", "-routed-right, eth0: rp_filter", "traced: drop IP_RPFILTER",
                     "-bridge-sw, br0: bridge_netfilter", "traced: drop NETFILTER_DROP",
                     "-macvlan-host, lan0: macvlan_parent_isolation", "apply the first fix:",
                     "lab networks removed."):
        assert expected in out, f"{expected!r} not in the demo's output:\n{out}\n{proc.stderr}"
    if overlay:   # named on node2, where the tunnel's outer packets are dropped
        assert re.search(r"it breaks in bpftlab-demo[0-9a-f]{6}-overlay-l2-node2, \S+: tunnel_firewall", out), out
    if docker:
        assert "it breaks in docker:bpftools-demo-" in out and ", eth0: netfilter_drop" in out
        name = out.split("== docker: container ", 1)[1].split()[0]
        for made in (name, f"bpftools-demo:{name.rsplit('-', 1)[1]}"):  # the container and its image
            assert subprocess.run(["docker", "inspect", made], capture_output=True).returncode != 0, made
    else:
        assert "(no Docker story: " in out
    # ours are gone; another demo may run concurrently, under a prefix of its own
    ours = re.search(r"bpftlab-demo[0-9a-f]{6}-", out).group(0)
    assert not lab_namespaces(ours), lab_namespaces(ours)
