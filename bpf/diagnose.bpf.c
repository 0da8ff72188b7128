/* bpftools diagnose: count the ping's ICMP / ICMPv6 echo requests and replies per hop.
 *
 * Raw tracepoints netif_receive_skb (every received packet, args: skb) and
 * net_dev_start_xmit (every transmitted packet, args: skb, dev) see all namespaces; a packet
 * counts when it is an echo between FILTER_A and FILTER_B (either way): IPv4 ICMP types 8/0
 * (also inside ipip) or IPv6 ICMPv6 types 128/129 (after hop-by-hop, routing, destination
 * options and first-fragment headers), and its device's namespace is in `hop_netns`.
 * Counts are keyed (netns inode, ifindex, direction, ICMP type). sk_buff/net_device are read
 * through the BTF offsets (OFF_*) only. Configuration: -DFILTER_FAMILY (4 or 6) and
 * -DFILTER_A0..3 / -DFILTER_B0..3: the addresses as four u32 words loaded from memory
 * (network byte order; IPv4 in word 0). */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include "ipproto.h"   /* not <uapi/linux/in.h>: see ipproto.h */
#include <uapi/linux/in6.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include "bpftools_kernel.h"

#define MAC_HEADER_UNSET 0xffff
#define DIR_RX 0
#define DIR_TX 1
#define HOP_MAX_EXT_HEADERS 4
#define ICMPV6_ECHO_REQUEST 128
#define ICMPV6_ECHO_REPLY 129

struct hop_key {
    u32 netns;
    u32 ifindex;
    u8 dir;
    u8 icmp_type;
    u16 pad;
};

BPF_HASH(hop_counts, struct hop_key, u64, 4096);
BPF_HASH(hop_netns, u32, u8, 256);   /* the path's namespaces (own name: compiled beside trace_drops) */

static __always_inline int ours(u32 saddr, u32 daddr)
{
    return (saddr == FILTER_A0 && daddr == FILTER_B0) || (saddr == FILTER_B0 && daddr == FILTER_A0);
}

static __always_inline int hop_is_a(const u32 *w)
{
    return w[0] == FILTER_A0 && w[1] == FILTER_A1 && w[2] == FILTER_A2 && w[3] == FILTER_A3;
}

static __always_inline int hop_is_b(const u32 *w)
{
    return w[0] == FILTER_B0 && w[1] == FILTER_B1 && w[2] == FILTER_B2 && w[3] == FILTER_B3;
}

/* The ICMPv6 type of an echo between A and B, else 0xff. */
static __always_inline u8 hop_echo6_type(const char *head, u32 off)
{
    struct ipv6hdr ip6 = {};
    if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + off) != 0 || ip6.version != 6)
        return 0xff;
    const u32 *s = ip6.saddr.in6_u.u6_addr32, *d = ip6.daddr.in6_u.u6_addr32;
    if (!((hop_is_a(s) && hop_is_b(d)) || (hop_is_b(s) && hop_is_a(d))))
        return 0xff;
    u8 next = ip6.nexthdr;
    off += sizeof(ip6);
#pragma unroll
    for (int i = 0; i < HOP_MAX_EXT_HEADERS; i++) {
        u8 ext[2] = {};
        if (next == IPPROTO_FRAGMENT) {
            u16 frag = 0;  /* only the first fragment carries the ICMPv6 header */
            if (bpf_probe_read_kernel(ext, sizeof(ext), head + off) != 0 ||
                bpf_probe_read_kernel(&frag, sizeof(frag), head + off + 2) != 0 || (bpf_ntohs(frag) & 0xfff8))
                return 0xff;
            next = ext[0];
            off += 8;
        } else if (next == IPPROTO_HOPOPTS || next == IPPROTO_ROUTING || next == IPPROTO_DSTOPTS) {
            if (bpf_probe_read_kernel(ext, sizeof(ext), head + off) != 0)
                return 0xff;
            next = ext[0];
            off += (ext[1] + 1) * 8;
        }
    }
    if (next != IPPROTO_ICMPV6)
        return 0xff;
    u8 type = 0xff;
    bpf_probe_read_kernel(&type, sizeof(type), head + off);
    return (type == ICMPV6_ECHO_REQUEST || type == ICMPV6_ECHO_REPLY) ? type : 0xff;
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

static __always_inline void count(const void *skb, u8 dir)
{
    u16 proto = kread_u16(skb, OFF_SKB_PROTOCOL);
    if (proto != bpf_htons(FILTER_FAMILY == 6 ? ETH_P_IPV6 : ETH_P_IP))
        return;
    const void *dev = kread_ptr(skb, OFF_SKB_DEV);
    if (!dev)
        return;
    u32 netns = dev_netns_inode(dev);
    if (!hop_netns.lookup(&netns))
        return;
    const char *head = kread_ptr(skb, OFF_SKB_HEAD);
    u16 nh = kread_u16(skb, OFF_SKB_NETWORK_HEADER);
    if (!head || nh == MAC_HEADER_UNSET)
        return;
    if (FILTER_FAMILY == 6) {
        u8 type6 = hop_echo6_type(head, nh);
        if (type6 != 0xff)
            hop_add(netns, dev, dir, type6);
        return;
    }
    struct iphdr ip = {};
    if (bpf_probe_read_kernel(&ip, sizeof(ip), head + nh) != 0 || ip.version != 4)
        return;
    u32 off = nh + ip.ihl * 4;
    if (ip.protocol == IPPROTO_IPIP) {  /* count the tunnelled ping on the underlay too */
        if (bpf_probe_read_kernel(&ip, sizeof(ip), head + off) != 0 || ip.version != 4)
            return;
        off += ip.ihl * 4;
    }
    if (ip.protocol != IPPROTO_ICMP || !ours(ip.saddr, ip.daddr))
        return;
    u8 type = 0xff;
    bpf_probe_read_kernel(&type, sizeof(type), head + off);
    if (type != 0 && type != 8)
        return;
    hop_add(netns, dev, dir, type);
}

int bpftools_dgrx(struct bpf_raw_tracepoint_args *ctx)
{
    count((const void *)ctx->args[0], DIR_RX);
    return 0;
}

int bpftools_dgtx(struct bpf_raw_tracepoint_args *ctx)
{
    count((const void *)ctx->args[0], DIR_TX);
    return 0;
}
