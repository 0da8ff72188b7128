/* `bpftools xdp-decap`: IP-in-IP decapsulation in XDP (Katran's decap, the kernel's ipip/sit/ip6tnl
 * receive path), safe by default: only tunnels from allow-listed senders to this host's addresses.
 *
 * Outer IPv4 or IPv6 (no extension headers) carrying IPv4 (protocol 4) or IPv6 (protocol 41) on an
 * untagged Ethernet frame. The outer header is removed with bpf_xdp_adjust_head and the Ethernet
 * header is rewritten in front of the inner one with the inner ethertype. Outer CE is copied into
 * the inner header (RFC 6040 normal mode, as Linux does: only CE is propagated; an inner Not-ECT
 * packet with an outer CE mark is not decapsulated). Every packet increments exactly one of
 * decapsulated, passed_not_tunnel, rejected_remote, malformed and fragment, plus `redirected` or
 * `redirect_failed` when it is decapsulated and forwarded.
 *
 * Configuration (-D defines): LOCAL_V4 / LOCAL_V6 (this host's tunnel endpoints), REDIRECT (send decapsulated packets through tx_ports slot 0),
 * ROUTE (bpf_fib_lookup, egress through the tx_ports slot egress_slots gives), REDIRECT_DST_MAC /
 * REDIRECT_SRC_MAC (48-bit integers; without REDIRECT_DST_MAC the destination MAC comes from the
 * neighbours map). tests/decap_model.py is the reference model of this file: change both together.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/in.h>
#include "packet.h"

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

/* Counter indexes: same order as COUNTERS in bpftools/xdp_decap.py. */
enum decap_counter {
    DECAPSULATED,
    REDIRECTED,
    PASSED_NOT_TUNNEL,
    REJECTED_REMOTE,
    MALFORMED,
    FRAGMENT,
    REDIRECT_FAILED,
    COUNTER_MAX,
};

#define IPPROTO_IPIP_ 4
#define IPPROTO_IPV6_ 41
#define IPPROTO_FRAGMENT_ 44
#define ECN_CE 3
#define IPV4_WORDS_MAX 15

/* An address of either family: family (4 or 6, big endian) then the address, IPv4 zero-padded. */
struct addr_key {
    __be32 family;
    __be32 addr[4];
};

struct lpm_key {
    __u32 prefixlen; /* covers the 32 family bits, then the address bits */
    struct addr_key a;
};

struct mac {
    __u8 bytes[6];
    __u16 pad;
};

BPF_PERCPU_ARRAY(counters, __u64, COUNTER_MAX);
BPF_LPM_TRIE(allow, struct lpm_key, __u8, 4096);
#if defined(REDIRECT) || defined(ROUTE)
BPF_DEVMAP(tx_ports, 64);
#endif
#ifdef ROUTE
BPF_HASH(egress_slots, __u32, __u32, 64);
#endif
#if defined(REDIRECT) && !defined(REDIRECT_DST_MAC)
BPF_HASH(neighbours, struct addr_key, struct mac, 4096);
#endif

static __always_inline int count(__u32 index, int verdict)
{
    __u64 *value = counters.lookup(&index);
    if (value)
        *value += 1;
    return verdict;
}

/* RFC 1624 eqn. 3 on a checksum stored in the packet: HC' = ~(~HC + ~m + m'). */
static __always_inline void csum_replace2(__u16 *sum, __u16 old, __u16 new)
{
    __u32 s = (__u16)~*sum + (__u16)~old + (__u32)new;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    *sum = ~s;
}

static __always_inline int ipv4_csum_valid(struct iphdr *ip, void *end)
{
    __u32 *word = (void *)ip;
    __u32 ihl = ip->ihl;
    __u64 sum = 0;
#pragma unroll
    for (int i = 0; i < IPV4_WORDS_MAX; i++) {
        __u32 *w = word + i;
        if (i >= ihl)
            break;
        if ((void *)(w + 1) > end)
            return 0;
        sum += *w;
    }
    sum = (sum & 0xffffffff) + (sum >> 32);
    sum = (sum & 0xffffffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return sum == 0xffff;
}

static __always_inline __u8 ipv6_ecn(const void *ip6)
{
    return (((const __u8 *)ip6)[1] >> 4) & 3;
}

/* Checks on the inner header before anything is changed: the whole inner packet lies inside
 * the outer payload, and RFC 6040 allows the decapsulation. */
static __always_inline int inner_valid(void *inner, __u32 inner_len, void *end, __u8 proto, __u8 outer_ecn)
{
    __u8 inner_ecn;
    if (proto == IPPROTO_IPIP_) {
        struct iphdr *ip = inner;
        if (inner_len < sizeof(*ip) || (void *)(ip + 1) > end)
            return 0;
        __u32 hlen = ip->ihl * 4, tot = bpf_ntohs(ip->tot_len);
        if (ip->version != 4 || ip->ihl < 5 || tot < hlen || tot > inner_len)
            return 0;
        inner_ecn = ip->tos & 3;
    } else {
        struct ipv6hdr *ip6 = inner;
        if (inner_len < sizeof(*ip6) || (void *)(ip6 + 1) > end)
            return 0;
        if (ip6->version != 6 || sizeof(*ip6) + bpf_ntohs(ip6->payload_len) > inner_len)
            return 0;
        inner_ecn = ipv6_ecn(ip6);
    }
    return !(outer_ecn == ECN_CE && inner_ecn == 0); /* RFC 6040: Not-ECT inside CE is dropped */
}

/* Is the outer destination one of ours? LOCAL_V4 / LOCAL_V6 list the addresses as 32-bit words
 * in packet byte order (4 words per IPv6 address); the comparisons unroll into immediates. */
static __always_inline int local_v4(__be32 dst)
{
#ifdef LOCAL_V4
    const __be32 local[] = {LOCAL_V4};
#pragma unroll
    for (int i = 0; i < sizeof(local) / sizeof(local[0]); i++)
        if (dst == local[i])
            return 1;
#endif
    return 0;
}

static __always_inline int local_v6(const __be32 *dst)
{
#ifdef LOCAL_V6
    const __be32 local[] = {LOCAL_V6};
#pragma unroll
    for (int i = 0; i < sizeof(local) / sizeof(local[0]); i += 4)
        if (dst[0] == local[i] && dst[1] == local[i + 1] && dst[2] == local[i + 2] && dst[3] == local[i + 3])
            return 1;
#endif
    return 0;
}

static __always_inline int allowed_source(struct addr_key *src, __u32 src_bits)
{
    struct lpm_key key = {.prefixlen = 32 + src_bits, .a = *src};
    return allow.lookup(&key) != NULL;
}

#if defined(REDIRECT) || defined(ROUTE)
static __always_inline void set_mac(__u8 *dst, __u64 mac)
{
#pragma unroll
    for (int i = 0; i < 6; i++)
        dst[i] = (mac >> (8 * (5 - i))) & 0xff;
}

/* Hop limit left after forwarding; 0 means the stack must handle it (TTL <= 1). */
static __always_inline int forwardable(void *inner, void *end, int v4)
{
    if (v4) {
        struct iphdr *ip = inner;
        return (void *)(ip + 1) <= end && ip->ttl > 1;
    }
    struct ipv6hdr *ip6 = inner;
    return (void *)(ip6 + 1) <= end && ip6->hop_limit > 1;
}

static __always_inline void decrease_ttl(void *inner, int v4)
{
    if (v4) { /* ip_decrease_ttl */
        struct iphdr *ip = inner;
        __u32 check = ip->check;
        check += bpf_htons(0x0100);
        ip->check = (__u16)(check + (check >= 0xFFFF));
        ip->ttl--;
    } else {
        ((struct ipv6hdr *)inner)->hop_limit--;
    }
}

static __always_inline void inner_addr(void *inner, int v4, struct addr_key *key, int dst)
{
    if (v4) {
        struct iphdr *ip = inner;
        key->family = bpf_htonl(4);
        key->addr[0] = dst ? ip->daddr : ip->saddr;
    } else {
        struct ipv6hdr *ip6 = inner;
        key->family = bpf_htonl(6);
        __builtin_memcpy(key->addr, dst ? ip6->daddr.s6_addr32 : ip6->saddr.s6_addr32, 16);
    }
}
#endif

#ifdef REDIRECT
static __always_inline int forward(struct xdp_md *ctx, struct ethhdr *eth, void *inner, void *end, int v4)
{
    if (!forwardable(inner, end, v4))
        return count(REDIRECT_FAILED, XDP_PASS);
#ifdef REDIRECT_DST_MAC
    set_mac(eth->h_dest, REDIRECT_DST_MAC);
#else
    struct addr_key key = {};
    inner_addr(inner, v4, &key, 1);
    struct mac *neigh = neighbours.lookup(&key);
    if (!neigh)
        return count(REDIRECT_FAILED, XDP_PASS);
    __builtin_memcpy(eth->h_dest, neigh->bytes, 6);
#endif
    set_mac(eth->h_source, REDIRECT_SRC_MAC);
    decrease_ttl(inner, v4);
    int verdict = tx_ports.redirect_map(0, XDP_PASS);
    return count(verdict == XDP_REDIRECT ? REDIRECTED : REDIRECT_FAILED, verdict);
}
#endif

#ifdef ROUTE
static __always_inline int forward(struct xdp_md *ctx, struct ethhdr *eth, void *inner, void *end, int v4)
{
    struct bpf_fib_lookup fib = {};
    if (!forwardable(inner, end, v4))
        return count(REDIRECT_FAILED, XDP_PASS);
    if (v4) {
        struct iphdr *ip = inner;
        fib.family = AF_INET;
        fib.tos = ip->tos;
        fib.l4_protocol = ip->protocol;
        fib.tot_len = bpf_ntohs(ip->tot_len);
        fib.ipv4_src = ip->saddr;
        fib.ipv4_dst = ip->daddr;
    } else {
        struct ipv6hdr *ip6 = inner;
        fib.family = AF_INET6;
        fib.flowinfo = *(__be32 *)ip6 & bpf_htonl(0x0FFFFFFF);
        fib.l4_protocol = ip6->nexthdr;
        fib.tot_len = sizeof(*ip6) + bpf_ntohs(ip6->payload_len); /* whole packet, checked against the MTU */
        __builtin_memcpy(fib.ipv6_src, ip6->saddr.s6_addr32, 16);
        __builtin_memcpy(fib.ipv6_dst, ip6->daddr.s6_addr32, 16);
    }
    fib.ifindex = ctx->ingress_ifindex;
    if (bpf_fib_lookup(ctx, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS)
        return count(REDIRECT_FAILED, XDP_PASS); /* no neighbour, MTU, local, ...: the stack knows */
    __u32 egress = fib.ifindex;
    __u32 *slot = egress_slots.lookup(&egress);
    if (!slot)
        return count(REDIRECT_FAILED, XDP_PASS); /* egress cannot take XDP frames */
    __builtin_memcpy(eth->h_dest, fib.dmac, 6);
    __builtin_memcpy(eth->h_source, fib.smac, 6);
    decrease_ttl(inner, v4);
    int verdict = tx_ports.redirect_map(*slot, XDP_PASS);
    return count(verdict == XDP_REDIRECT ? REDIRECTED : REDIRECT_FAILED, verdict);
}
#endif

/* Remove `outer_len` bytes after the Ethernet header; the inner packet was validated already. */
static __always_inline int decapsulate(struct xdp_md *ctx, __u32 outer_len, __u8 proto, __u8 outer_ecn)
{
    struct ethhdr *eth = (void *)(long)ctx->data;
    struct ethhdr saved;
    int v4 = proto == IPPROTO_IPIP_;
    if ((void *)(eth + 1) > (void *)(long)ctx->data_end)
        return XDP_PASS;
    __builtin_memcpy(&saved, eth, sizeof(saved));
    if (bpf_xdp_adjust_head(ctx, outer_len))
        return count(MALFORMED, XDP_PASS);

    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    eth = data;
    void *inner = data + sizeof(*eth);
    if (inner + sizeof(struct iphdr) > end)
        return XDP_ABORTED; /* cannot happen: checked before adjusting */
    __builtin_memcpy(eth, &saved, ETH_ALEN * 2);
    eth->h_proto = v4 ? bpf_htons(ETH_P_IP) : bpf_htons(ETH_P_IPV6);

    if (outer_ecn == ECN_CE) {
        if (v4) {
            struct iphdr *ip = inner;
            if ((ip->tos & 3) != ECN_CE) {
                __u16 *first = inner;
                __u16 old = *first;
                ip->tos |= ECN_CE;
                csum_replace2(&ip->check, old, *first);
            }
        } else {
            ((__u8 *)inner)[1] |= ECN_CE << 4;
        }
    }
    count(DECAPSULATED, XDP_PASS);
#if defined(REDIRECT) || defined(ROUTE)
    return forward(ctx, eth, inner, end, v4);
#else
    return XDP_PASS;
#endif
}

static __always_inline int outer_ipv4(struct xdp_md *ctx, void *pos, void *end)
{
    struct iphdr *ip = pos;
    if ((void *)(ip + 1) > end)
        return count(MALFORMED, XDP_PASS);
    if (ip->protocol != IPPROTO_IPIP_ && ip->protocol != IPPROTO_IPV6_)
        return count(PASSED_NOT_TUNNEL, XDP_PASS);
    __u32 hlen = ip->ihl * 4, tot = bpf_ntohs(ip->tot_len);
    if (ip->version != 4 || ip->ihl < 5 || tot < hlen || pos + tot > end)
        return count(MALFORMED, XDP_PASS);
    if (!ipv4_csum_valid(ip, end))
        return count(MALFORMED, XDP_PASS);
    if (ipv4_is_fragment(ip))
        return count(FRAGMENT, XDP_PASS);

    struct addr_key src = {.family = bpf_htonl(4), .addr = {ip->saddr}};
    if (!local_v4(ip->daddr) || !allowed_source(&src, 32))
        return count(REJECTED_REMOTE, XDP_PASS);
    __u8 proto = ip->protocol, ecn = ip->tos & 3;
    if (!inner_valid(pos + (hlen & 0x3f), tot - hlen, end, proto, ecn))
        return count(MALFORMED, XDP_PASS);
    return decapsulate(ctx, hlen, proto, ecn);
}

static __always_inline int outer_ipv6(struct xdp_md *ctx, void *pos, void *end)
{
    struct ipv6hdr *ip6 = pos;
    if ((void *)(ip6 + 1) > end)
        return count(MALFORMED, XDP_PASS);
    __u8 next = ip6->nexthdr;
    int fragment = 0;
    if (next == IPPROTO_FRAGMENT_) { /* a fragment header first: look at what it fragments */
        __u8 *frag = (void *)(ip6 + 1);
        if ((void *)(frag + 1) > end)
            return count(PASSED_NOT_TUNNEL, XDP_PASS);
        next = *frag;
        fragment = 1;
    }
    if (next != IPPROTO_IPIP_ && next != IPPROTO_IPV6_)
        return count(PASSED_NOT_TUNNEL, XDP_PASS); /* includes other extension headers */
    __u32 plen = bpf_ntohs(ip6->payload_len);
    if (ip6->version != 6 || pos + sizeof(*ip6) + plen > end)
        return count(MALFORMED, XDP_PASS);
    if (fragment)
        return count(FRAGMENT, XDP_PASS);

    struct addr_key src = {.family = bpf_htonl(6)};
    __builtin_memcpy(src.addr, ip6->saddr.s6_addr32, 16);
    if (!local_v6(ip6->daddr.s6_addr32) || !allowed_source(&src, 128))
        return count(REJECTED_REMOTE, XDP_PASS);
    __u8 ecn = ipv6_ecn(ip6);
    if (!inner_valid(pos + sizeof(*ip6), plen, end, next, ecn))
        return count(MALFORMED, XDP_PASS);
    return decapsulate(ctx, sizeof(*ip6), next, ecn);
}

int bpftools_decap(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end)
        return count(MALFORMED, XDP_PASS);
    if (eth->h_proto == bpf_htons(ETH_P_IP))
        return outer_ipv4(ctx, eth + 1, end);
    if (eth->h_proto == bpf_htons(ETH_P_IPV6))
        return outer_ipv6(ctx, eth + 1, end);
    return count(PASSED_NOT_TUNNEL, XDP_PASS); /* ARP, VLAN-tagged frames, ... */
}

/* Loaded on the peer of a veth we redirect into: veth only accepts XDP frames when its peer
 * runs an XDP program. */
int bpftools_xpass(struct xdp_md *ctx)
{
    return XDP_PASS;
}

#ifdef TRAFFIC_GENERATOR
/* Traffic generator for benchmarks/bench_xdp_decap.py, never attached: under BPF_PROG_TEST_RUN
 * with live frames, XDP_TX sends each frame out of the ingress interface. The kernel recycles
 * the frame pages without copying the test data again, and the receiver's decapsulation
 * rewrote them: restore the first GENERATOR_COPY bytes from gen_frame first. */
#define GENERATOR_COPY 64
struct gen_frame {
    __u8 bytes[GENERATOR_COPY];
};
BPF_ARRAY(gen_frame, struct gen_frame, 1);

int bpftools_xtx(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    __u32 key = 0;
    struct gen_frame *frame = gen_frame.lookup(&key);
    if (frame && data + GENERATOR_COPY <= end)
        __builtin_memcpy(data, frame->bytes, GENERATOR_COPY);
    return XDP_TX;
}
#endif
