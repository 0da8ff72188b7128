/* encap-stats: count packets and bytes per (interface, direction, tunnel type).
 *
 * One classifier (classify()) walks a cursor over the packet and serves both hooks: XDP
 * for ingress (bpftools_ec_xdp) and tc for ingress/egress (bpftools_ec_in, bpftools_ec_eg).
 *
 * Configuration (from bpftools/encap_stats.py):
 *   IFINDEX_0 .. IFINDEX_7  ifindexes counted, in slot order (a packet on another one is ignored)
 *   L3_SLOTS                bit mask of slots whose device has no Ethernet header (ipip, gre, tun)
 *   TOP_PAIRS               with a size: keep the busiest outer endpoint pairs in an LRU map
 *   udp_ports (map)         UDP destination port -> tunnel type, filled at startup
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include "packet.h"
#include "encap.h"

#ifndef L3_SLOTS
#define L3_SLOTS 0
#endif
#ifndef ETH_P_TEB
#define ETH_P_TEB 0x6558
#endif
#define IPV6_FRAGMENT_HEADER 44
#define PULL_LEN 128  /* tc: linear bytes we ask for when headers sit in paged data */

BPF_PERCPU_ARRAY(encap_counters, struct encap_counter, ENCAP_MAX_IFACES * ENCAP_DIR_COUNT * ENCAP_TYPE_COUNT);
/* UDP destination port -> tunnel type, 4 bits per port, 16 ports per word: an array lookup
 * (inlined by the verifier) instead of a hash lookup on every UDP packet. */
BPF_ARRAY(udp_ports, __u64, UDP_PORT_WORDS);
#ifdef TOP_PAIRS
BPF_TABLE("lru_hash", struct encap_pair_key, struct encap_counter, top_pairs, TOP_PAIRS);
#endif

struct encap_result {
    __u8 type;
    __u8 family;     /* outer IP version, 0 when not IP */
    __u8 truncated;  /* a header we needed ran past the end of the data */
    void *saddr;     /* outer addresses, inside the packet */
    void *daddr;
};

struct gre_base {
    __be16 flags;
    __be16 proto;
};

struct ipv6_frag {
    __u8 nexthdr;
    __u8 reserved;
    __be16 frag_off;
    __be32 id;
};

static __always_inline int iface_slot(__u32 ifindex)
{
#ifdef IFINDEX_0
    if (ifindex == IFINDEX_0)
        return 0;
#endif
#ifdef IFINDEX_1
    if (ifindex == IFINDEX_1)
        return 1;
#endif
#ifdef IFINDEX_2
    if (ifindex == IFINDEX_2)
        return 2;
#endif
#ifdef IFINDEX_3
    if (ifindex == IFINDEX_3)
        return 3;
#endif
#ifdef IFINDEX_4
    if (ifindex == IFINDEX_4)
        return 4;
#endif
#ifdef IFINDEX_5
    if (ifindex == IFINDEX_5)
        return 5;
#endif
#ifdef IFINDEX_6
    if (ifindex == IFINDEX_6)
        return 6;
#endif
#ifdef IFINDEX_7
    if (ifindex == IFINDEX_7)
        return 7;
#endif
    return -1;
}

/* The tunnel type an IP protocol / next header (and what follows it) means. */
static __always_inline __u8 classify_payload(struct cursor *c, __u8 proto, int outer_v6, int first_fragment,
                                             struct encap_result *r)
{
    if (proto == IPPROTO_IPIP)
        return outer_v6 ? ENCAP_IP4IN6 : ENCAP_IPIP;
    if (proto == IPPROTO_IPV6)
        return outer_v6 ? ENCAP_IP6IP6 : ENCAP_SIT;
    if (proto == IPPROTO_GRE) {
        if (!first_fragment)
            return ENCAP_GRE;
        struct gre_base *gre = cursor_take(c, sizeof(*gre));
        if (!gre) {
            r->truncated = 1;
            return ENCAP_NONE;
        }
        return gre->proto == bpf_htons(ETH_P_TEB) ? ENCAP_GRETAP : ENCAP_GRE;
    }
    if (proto == IPPROTO_UDP && first_fragment) {
        struct udphdr *udp = cursor_take(c, sizeof(*udp));
        if (!udp) {
            r->truncated = 1;
            return ENCAP_NONE;
        }
        __u16 port = bpf_ntohs(udp->dest);
        __u32 word = port / UDP_PORTS_PER_WORD;
        __u64 *types = udp_ports.lookup(&word);
        if (types) {
            __u8 type = (*types >> ((port % UDP_PORTS_PER_WORD) * UDP_PORT_TYPE_BITS)) & 0xF;
            if (type < ENCAP_TYPE_COUNT)
                return type;
        }
    }
    return ENCAP_NONE;
}

/* Classify the packet under the cursor; `l3` means it starts at the IP header. */
static __always_inline void classify(struct cursor *c, int l3, struct encap_result *r)
{
    __be16 proto;
    if (l3) {
        __u8 *first = c->pos;
        if ((void *)(first + 1) > c->end) {
            r->truncated = 1;
            return;
        }
        proto = (*first >> 4) == 6 ? bpf_htons(ETH_P_IPV6) : bpf_htons(ETH_P_IP);
    } else if (!parse_ethernet(c, &proto)) {
        r->truncated = 1;
        return;
    }
    if (proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = parse_ipv4(c);
        if (!ip) {
            r->truncated = 1;
            return;
        }
        r->family = 4;
        r->saddr = &ip->saddr;
        r->daddr = &ip->daddr;
        int first_fragment = (ip->frag_off & bpf_htons(0x1FFF)) == 0;
        r->type = classify_payload(c, ip->protocol, 0, first_fragment, r);
    } else if (proto == bpf_htons(ETH_P_IPV6)) {
        __u8 next = 0;
        struct ipv6hdr *ip6 = parse_ipv6(c, &next);
        if (!ip6) {
            r->truncated = 1;
            return;
        }
        r->family = 6;
        r->saddr = &ip6->saddr;
        r->daddr = &ip6->daddr;
        int first_fragment = 1;
        if (next == IPV6_FRAGMENT_HEADER) {
            struct ipv6_frag *frag = cursor_take(c, sizeof(*frag));
            if (!frag) {
                r->truncated = 1;
                return;
            }
            next = frag->nexthdr;
            first_fragment = (frag->frag_off & bpf_htons(0xFFF8)) == 0;
        }
        r->type = classify_payload(c, next, 1, first_fragment, r);
    }
}

#ifdef TOP_PAIRS
static __always_inline void count_pair(struct encap_result *r, void *end, __u32 segments, __u64 len)
{
    struct encap_pair_key key = {};
    key.type = r->type;
    key.family = r->family;
    if (r->family == 4) {
        if (r->saddr + 4 > end || r->daddr + 4 > end)
            return;
        __builtin_memcpy(key.src, r->saddr, 4);
        __builtin_memcpy(key.dst, r->daddr, 4);
    } else {
        if (r->saddr + 16 > end || r->daddr + 16 > end)
            return;
        __builtin_memcpy(key.src, r->saddr, 16);
        __builtin_memcpy(key.dst, r->daddr, 16);
    }
    struct encap_counter *pair = top_pairs.lookup(&key);
    if (pair) {
        __sync_fetch_and_add(&pair->packets, segments);
        __sync_fetch_and_add(&pair->bytes, len);
        return;
    }
    struct encap_counter first = {segments, len};
    top_pairs.update(&key, &first);
}
#endif

/* `segments`: wire packets this one stands for (a GSO/GRO packet counts its segments; its headers once). */
static __always_inline void account(int slot, int direction, __u32 segments, __u64 len, struct encap_result *r,
                                    void *end)
{
    __u32 type = r->type;
    if (type >= ENCAP_TYPE_COUNT)
        type = ENCAP_NONE;
    __u32 index = ((__u32)slot * ENCAP_DIR_COUNT + direction) * ENCAP_TYPE_COUNT + type;
    struct encap_counter *counter = encap_counters.lookup(&index);
    if (counter) {
        counter->packets += segments;
        counter->bytes += len;
    }
#ifdef TOP_PAIRS
    if (type != ENCAP_NONE)
        count_pair(r, end, segments, len);
#endif
}

int bpftools_ec_xdp(struct xdp_md *ctx)
{
    int slot = iface_slot(ctx->ingress_ifindex);
    if (slot < 0)
        return XDP_PASS;
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct cursor c = {data, end};
    struct encap_result r = {};
    classify(&c, (L3_SLOTS >> slot) & 1, &r);
    account(slot, ENCAP_DIR_INGRESS, 1, end - data, &r, end);
    return XDP_PASS;
}

static __always_inline int tc_count(struct __sk_buff *skb, int direction)
{
    int slot = iface_slot(skb->ifindex);
    if (slot < 0)
        return TC_ACT_UNSPEC;
    int l3 = (L3_SLOTS >> slot) & 1;
    struct encap_result r = {};
    struct cursor c = {(void *)(long)skb->data, (void *)(long)skb->data_end};
    classify(&c, l3, &r);
    __u32 linear = skb->data_end - skb->data;
    __u64 len = skb->len + (skb->vlan_present ? 4 : 0);  /* a tag the driver/kernel took out counts too */
    __u32 segments = skb->gso_segs > 1 ? skb->gso_segs : 1;
    if (r.truncated && skb->len > linear && linear < PULL_LEN) {
        /* headers continue in paged data: make them linear once and look again */
        bpf_skb_pull_data(skb, skb->len < PULL_LEN ? skb->len : PULL_LEN);
        struct encap_result again = {};
        struct cursor c2 = {(void *)(long)skb->data, (void *)(long)skb->data_end};
        classify(&c2, l3, &again);
        account(slot, direction, segments, len, &again, c2.end);
        return TC_ACT_UNSPEC;
    }
    account(slot, direction, segments, len, &r, c.end);
    return TC_ACT_UNSPEC;  /* pass on to the next program/filter: we only count */
}

int bpftools_ec_in(struct __sk_buff *skb)
{
    return tc_count(skb, ENCAP_DIR_INGRESS);
}

int bpftools_ec_eg(struct __sk_buff *skb)
{
    return tc_count(skb, ENCAP_DIR_EGRESS);
}
