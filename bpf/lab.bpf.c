/* Faults `bpftools lab` injects: an over-eager XDP or tc firewall that drops IPv4 ICMP. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include "packet.h"

static __always_inline int is_icmpv4(void *data, void *data_end)
{
    struct cursor c = { .pos = data, .end = data_end };
    __be16 proto = 0;
    if (!parse_ethernet(&c, &proto) || proto != bpf_htons(ETH_P_IP))
        return 0;
    struct iphdr *ip = parse_ipv4(&c);
    return ip && ip->protocol == IPPROTO_ICMP;
}

int bpftools_labxdp(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    return is_icmpv4(data, data_end) ? XDP_DROP : XDP_PASS;
}

int bpftools_labtc(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    return is_icmpv4(data, data_end) ? TC_ACT_SHOT : TC_ACT_OK;
}
