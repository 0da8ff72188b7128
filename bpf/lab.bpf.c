/* Faults `bpftools lab` injects: an over-eager XDP or tc firewall that drops IPv4 ICMP and
 * ICMPv6 echo (neighbour discovery passes, so the drop is the echo's alone). */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include "packet.h"

#define ICMPV6_ECHO_REQUEST 128
#define ICMPV6_ECHO_REPLY 129

static __always_inline int is_icmp_echo(void *data, void *data_end)
{
    struct cursor c = { .pos = data, .end = data_end };
    __be16 proto = 0;
    if (!parse_ethernet(&c, &proto))
        return 0;
    if (proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = parse_ipv4(&c);
        return ip && ip->protocol == IPPROTO_ICMP;
    }
    if (proto != bpf_htons(ETH_P_IPV6))
        return 0;
    __u8 next = 0;
    if (!parse_ipv6(&c, &next) || next != IPPROTO_ICMPV6)
        return 0;
    __u8 *type = cursor_take(&c, 1);
    return type && (*type == ICMPV6_ECHO_REQUEST || *type == ICMPV6_ECHO_REPLY);
}

int bpftools_labxdp(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    return is_icmp_echo(data, data_end) ? XDP_DROP : XDP_PASS;
}

int bpftools_labtc(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    return is_icmp_echo(data, data_end) ? TC_ACT_SHOT : TC_ACT_OK;
}
