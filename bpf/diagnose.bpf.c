/* bpftools diagnose: count the ping's ICMP / ICMPv6 echo requests and replies per hop.
 *
 * Raw tracepoints netif_receive_skb (every received packet, args: skb) and
 * net_dev_start_xmit (every transmitted packet, args: skb, dev) see all namespaces; a packet
 * counts when it is an echo between FILTER_A and FILTER_B (either way) - IPv4 ICMP types 8/0 or
 * IPv6 ICMPv6 types 128/129 (after extension and first-fragment headers) - or a tunnel packet
 * carrying one (tunnel.h: VXLAN, GENEVE, ipip, sit, ip6ip6, ip4in6, GRE, gretap; either outer
 * family), so the underlay's hops count the ping too; and its device's namespace is in
 * `hop_netns`. Counts are keyed (netns inode, ifindex, direction, ICMP type of the echo).
 * sk_buff/net_device are read through the BTF offsets (OFF_*) only. Configuration:
 * -DFILTER_FAMILY (4 or 6) and -DFILTER_A0..3 / -DFILTER_B0..3: the addresses as four u32 words
 * loaded from memory (network byte order; IPv4 in word 0); TUNNEL_VXLAN_PORT0..3 /
 * TUNNEL_GENEVE_PORT0..1 (tunnel.h). */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include "bpftools_kernel.h"
#include "tunnel.h"

#define DIR_RX 0
#define DIR_TX 1
#define ICMPV6_ECHO_REQUEST 128
#define ICMPV6_ECHO_REPLY 129
#define WINDOW_SLOT_HOP_RX 1    /* tunnel_windows slots of the two programs (trace-drops has 0) */
#define WINDOW_SLOT_HOP_TX 2

struct hop_key {
    u32 netns;
    u32 ifindex;
    u8 dir;
    u8 icmp_type;
    u16 pad;
};

BPF_HASH(hop_counts, struct hop_key, u64, 4096);
BPF_HASH(hop_netns, u32, u8, 256);   /* the path's namespaces (own name: compiled beside trace_drops) */

static __always_inline int hop_is(const __u8 *addr, u32 w0, u32 w1, u32 w2, u32 w3)
{
    u32 w[4] = {};
    __builtin_memcpy(w, addr, 16);
    return w[0] == w0 && w[1] == w1 && w[2] == w2 && w[3] == w3;
}

/* The ICMP(v6) type of an echo between A and B, else 0xff. */
static __always_inline u8 echo_type(const struct tunnel_flow *f)
{
    if (f->family != FILTER_FAMILY || f->has_ports != FLOW_ICMP)
        return 0xff;
    int a_to_b = hop_is(f->saddr, FILTER_A0, FILTER_A1, FILTER_A2, FILTER_A3) &&
                 hop_is(f->daddr, FILTER_B0, FILTER_B1, FILTER_B2, FILTER_B3);
    int b_to_a = hop_is(f->saddr, FILTER_B0, FILTER_B1, FILTER_B2, FILTER_B3) &&
                 hop_is(f->daddr, FILTER_A0, FILTER_A1, FILTER_A2, FILTER_A3);
    if (!a_to_b && !b_to_a)
        return 0xff;
    u8 type = f->icmp_type;
    if (FILTER_FAMILY == 6)
        return (f->proto == TUN_P_ICMPV6 && (type == ICMPV6_ECHO_REQUEST || type == ICMPV6_ECHO_REPLY)) ? type : 0xff;
    return (f->proto == TUN_P_ICMP && (type == 0 || type == 8)) ? type : 0xff;
}

static __always_inline void hop_add(u32 netns, const void *dev, u8 dir, u8 type)
{
    struct hop_key key = {.netns = netns, .ifindex = kread_u32(dev, OFF_DEV_IFINDEX), .dir = dir,
                          .icmp_type = type};
    u64 one = 1;
    u64 *n = hop_counts.lookup(&key);
    if (n)
        __sync_fetch_and_add(n, 1);
    else
        hop_counts.update(&key, &one);
}

static __always_inline void count(const void *skb, u8 dir, u32 slot)
{
    u16 proto = kread_u16(skb, OFF_SKB_PROTOCOL);
    if (proto != bpf_htons(ETH_P_IP) && proto != bpf_htons(ETH_P_IPV6))
        return;  /* the echo, or the tunnel packet carrying it, is IP on the wire */
    const void *dev = kread_ptr(skb, OFF_SKB_DEV);
    if (!dev)
        return;
    u32 netns = dev_netns_inode(dev);
    if (!hop_netns.lookup(&netns))
        return;
    struct l3_span span;
    l3_place(skb, &span);
    if (!span.head || span.nh == MAC_HEADER_UNSET || span.tail <= span.nh)
        return;
    struct tunnel_window *w = tunnel_windows.lookup(&slot);
    if (!w)
        return;
    tunnel_window_read(w, span.head + span.nh, span.tail - span.nh);
    struct tunnel_flow outer = {}, inner = {};
    struct tunnel_encap encap = {};
    tunnel_parse(w, bpf_ntohs(proto), &outer, &encap, &inner);
    u8 type = echo_type(encap.kind != ENCAP_NONE ? &inner : &outer);
    if (type != 0xff)
        hop_add(netns, dev, dir, type);
}

int bpftools_dgrx(struct bpf_raw_tracepoint_args *ctx)
{
    count((const void *)ctx->args[0], DIR_RX, WINDOW_SLOT_HOP_RX);
    return 0;
}

int bpftools_dgtx(struct bpf_raw_tracepoint_args *ctx)
{
    count((const void *)ctx->args[0], DIR_TX, WINDOW_SLOT_HOP_TX);
    return 0;
}
