/* The tunnel parser of tunnel.h on packets given by BPF_PROG_TEST_RUN: tests feed it crafted
 * tunnel packets of every kind, and benchmarks/bench_tunnel_parse.py times it on plain and
 * encapsulated ones. A tc program: the test run hands it an Ethernet frame; the window is
 * copied from the network header, as trace-drops and diagnose copy it from an skb.
 * Configuration: TUNNEL_VXLAN_PORT0..3 / TUNNEL_GENEVE_PORT0..1 (tunnel.h); COPY_ONLY: copy the
 * window and stop (the benchmark's baseline: what the parsing itself adds). */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/pkt_cls.h>
#include "tunnel.h"

#define WINDOW_SLOT_TEST_RUN 3

/* Mirrored by PARSED_LAYOUT in bpftools/tunnel_parse.py. */
struct parsed {
    struct tunnel_flow outer;
    struct tunnel_encap encap;
    struct tunnel_flow inner;
};

BPF_ARRAY(parsed_packets, struct parsed, 1);

int bpftools_tunnel_parse(struct __sk_buff *skb)
{
    u32 zero = 0, slot = WINDOW_SLOT_TEST_RUN;
    struct parsed *out = parsed_packets.lookup(&zero);
    struct tunnel_window *w = tunnel_windows.lookup(&slot);
    if (!out || !w)
        return TC_ACT_SHOT;
    u32 len = skb->len > ETH_HLEN ? skb->len - ETH_HLEN : 0;
    if (len > TUNNEL_WINDOW)
        len = TUNNEL_WINDOW;
    if (len == 0 || bpf_skb_load_bytes(skb, ETH_HLEN, w->bytes, len) != 0)
        len = 0;
    w->len = len;
    __builtin_memset(out, 0, sizeof(*out));
#ifndef COPY_ONLY
    tunnel_parse(w, bpf_ntohs(skb->protocol), &out->outer, &out->encap, &out->inner);
#endif
    return TC_ACT_OK;
}
