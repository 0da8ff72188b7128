/* bpftools diagnose: count the ping's ICMP echo requests and replies per hop.
 *
 * Raw tracepoints netif_receive_skb (every received packet, args: skb) and
 * net_dev_start_xmit (every transmitted packet, args: skb, dev) see all namespaces; a packet
 * counts when it is IPv4 ICMP echo between FILTER_A and FILTER_B (either way, also inside
 * ipip) and its device's namespace is in `hop_netns`. Counts are keyed
 * (netns inode, ifindex, direction, ICMP type). sk_buff/net_device are read through the BTF
 * offsets (OFF_*) only. Configuration: -DFILTER_A / -DFILTER_B (IPv4 addresses as loaded
 * from memory, i.e. network byte order in a u32). */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include "bpftools_kernel.h"

#define MAC_HEADER_UNSET 0xffff
#define DIR_RX 0
#define DIR_TX 1

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
    return (saddr == FILTER_A && daddr == FILTER_B) || (saddr == FILTER_B && daddr == FILTER_A);
}

static __always_inline void count(const void *skb, u8 dir)
{
    if (kread_u16(skb, OFF_SKB_PROTOCOL) != bpf_htons(ETH_P_IP))
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
    struct hop_key key = {.netns = netns, .ifindex = kread_u32(dev, OFF_DEV_IFINDEX), .dir = dir,
                          .icmp_type = type};
    u64 one = 1;
    u64 *n = hop_counts.lookup(&key);
    if (n)
        __sync_fetch_and_add(n, 1);
    else
        hop_counts.update(&key, &one);
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
