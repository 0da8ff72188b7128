"""Commands on interfaces of the namespace bpftools runs in, when that namespace has no
`ip netns` name (a container, `unshare --net`): labels name the process that holds it
("pid:N (sh)"), nothing crashes. Each test runs in a private namespace from `unshare --net`,
gone when the command ends; traffic starts once bpftools said it is ready."""
import json
import subprocess
import sys

SETUP = ("ip link set lo up && ip link add a0 type veth peer name b0 && ip addr add 10.91.0.1/24 dev a0 "
         "&& ip link set a0 up && ip link set b0 up")
BPFTOOLS = f"{sys.executable} -m bpftools"


def when_ready(command: str, then: str) -> str:
    """Shell: start `command` in the background, run `then` once it printed its ready line."""
    return (f"{command} 2>/tmp/bt-ready-$$ & until grep -q 'bpftools: ready' /tmp/bt-ready-$$; do "
            f"kill -0 $! 2>/dev/null || break; sleep 0.1; done; {then}; wait $!; rc=$?; cat /tmp/bt-ready-$$ >&2; "
            f"rm -f /tmp/bt-ready-$$; exit $rc")


def held_by_a_process(label: str) -> bool:
    return label.startswith("pid:") and label.endswith(")")


def in_private_netns(script: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["unshare", "--net", "sh", "-c", f"{SETUP} && {script}"], capture_output=True, text=True,
                          timeout=timeout)


def json_lines(text: str) -> list:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_encap_stats_in_an_unnamed_current_namespace():
    proc = in_private_netns(when_ready(f"{BPFTOOLS} encap-stats a0 --duration 2 --json",
                                       "ping -c 2 -i 0.1 -W 1 10.91.0.2 >/dev/null"))
    assert proc.returncode == 0, proc.stderr
    rows = [r for r in json_lines(proc.stdout) if r["type"] == "encap"]
    assert rows and all(held_by_a_process(r["netns"]) and r["ifname"] == "a0" for r in rows), proc.stdout


def test_trace_drops_in_an_unnamed_current_namespace():
    send = f"{sys.executable} -c \"import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); [s.sendto(b'x', ('127.0.0.1', 9)) for _ in range(3)]\""
    proc = in_private_netns(when_ready(f"{BPFTOOLS} trace-drops --duration 2.5 --json", send))
    assert proc.returncode == 0, proc.stderr
    drops = [d for d in json_lines(proc.stdout) if d["type"] == "drop" and d["reason"] == "NO_SOCKET"]
    assert len(drops) >= 3 and held_by_a_process(drops[0]["netns"]) and drops[0]["ifname"] == "lo", proc.stdout


def test_xdp_decap_in_an_unnamed_current_namespace():
    proc = in_private_netns(f"{BPFTOOLS} xdp-decap a0 --allow-any --duration 1 --json")
    assert proc.returncode == 0, proc.stderr
    last = json_lines(proc.stdout)[-1]
    assert last["type"] == "decap" and held_by_a_process(last["netns"]) and last["ifname"] == "a0", proc.stdout
