/* Bounds-checked packet parsing over direct packet access (XDP and tc), shared by the
 * encap classifier and the XDP decapsulator. A cursor walks the packet; every helper
 * returns a pointer to the header or NULL when the packet is too short. */
#ifndef BPFTOOLS_PACKET_H
#define BPFTOOLS_PACKET_H

#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/in.h>
#include <uapi/linux/udp.h>

#define MAX_VLAN_TAGS 2          /* 802.1ad outer + 802.1Q inner */
#define MAX_IPV6_EXT_HEADERS 6   /* bounded walk of IPv6 extension headers */

struct cursor {
    void *pos;
    void *end;
};

struct vlan_tag {
    __be16 tci;
    __be16 encapsulated_proto;
};

static __always_inline void *cursor_take(struct cursor *c, __u32 len)
{
    void *start = c->pos;
    if (start + len > c->end)
        return NULL;
    c->pos = start + len;
    return start;
}

/* Ethernet header plus up to MAX_VLAN_TAGS tags; *proto gets the inner ethertype (network order). */
static __always_inline struct ethhdr *parse_ethernet(struct cursor *c, __be16 *proto)
{
    struct ethhdr *eth = cursor_take(c, sizeof(*eth));
    if (!eth)
        return NULL;
    __be16 type = eth->h_proto;
#pragma unroll
    for (int i = 0; i < MAX_VLAN_TAGS; i++) {
        if (type != bpf_htons(ETH_P_8021Q) && type != bpf_htons(ETH_P_8021AD))
            break;
        struct vlan_tag *tag = cursor_take(c, sizeof(*tag));
        if (!tag)
            return NULL;
        type = tag->encapsulated_proto;
    }
    *proto = type;
    return eth;
}

/* IPv4 header including options (IHL words); NULL if short or malformed. */
static __always_inline struct iphdr *parse_ipv4(struct cursor *c)
{
    struct iphdr *ip = c->pos;
    if ((void *)(ip + 1) > c->end)
        return NULL;
    if (ip->version != 4 || ip->ihl < 5)
        return NULL;
    if (!cursor_take(c, ip->ihl * 4))
        return NULL;
    return ip;
}

static __always_inline int ipv4_is_fragment(const struct iphdr *ip)
{
    return (ip->frag_off & bpf_htons(0x3FFF)) != 0; /* MF flag or non-zero offset */
}

/* IPv6 header, then extension headers (hop-by-hop, routing, destination options; fragment
 * header ends the walk). *nexthdr gets the first non-extension protocol. */
static __always_inline struct ipv6hdr *parse_ipv6(struct cursor *c, __u8 *nexthdr)
{
    struct ipv6hdr *ip6 = cursor_take(c, sizeof(*ip6));
    if (!ip6 || ip6->version != 6)
        return NULL;
    __u8 next = ip6->nexthdr;
#pragma unroll
    for (int i = 0; i < MAX_IPV6_EXT_HEADERS; i++) {
        if (next != IPPROTO_HOPOPTS && next != IPPROTO_ROUTING && next != IPPROTO_DSTOPTS)
            break;
        __u8 *ext = c->pos;
        if ((void *)(ext + 2) > c->end)
            return NULL;
        __u32 len = (ext[1] + 1) * 8;
        next = ext[0];
        if (!cursor_take(c, len))
            return NULL;
    }
    *nexthdr = next;
    return ip6;
}

#endif
