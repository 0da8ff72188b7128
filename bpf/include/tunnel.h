/* The flow of a packet and, when it is a tunnel packet, the flow inside it: one parser for
 * every program that must recognise a packet by what it carries (trace-drops, diagnose's
 * per-hop counters, the test-run parser of tests and benchmarks).
 *
 * Tunnels (enum encap_type of encap.h): ipip, sit, ip6ip6, ip4in6 (outer IP protocol 4/41),
 * GRE and gretap (protocol 47; checksum, key and sequence fields; version 0 only), VXLAN
 * (UDP 4789 and 8472, plus TUNNEL_VXLAN_PORT0..3) and GENEVE (UDP 6081, plus
 * TUNNEL_GENEVE_PORT0..1; options skipped by their length), over an outer IPv4 or IPv6 header.
 * Inner Ethernet frames (gretap, VXLAN, GENEVE) may carry up to two VLAN tags; the inner flow
 * is IPv4, IPv6 (extension headers walked) or ARP. One level of encapsulation is opened.
 *
 * The parser reads a window: the first TUNNEL_WINDOW bytes from the network header, copied once
 * into a per-CPU map value by whoever has the packet (bpf_probe_read_kernel from an skb,
 * bpf_skb_load_bytes in a test run). Every access is bounds-checked against both the buffer
 * (for the verifier: a masked offset) and the bytes actually copied (for correctness). Bytes are read one by one
 * in network order, so the results are host order and no unaligned loads exist. bcc only. */
#ifndef BPFTOOLS_TUNNEL_H
#define BPFTOOLS_TUNNEL_H

#include "encap.h"

#define TUNNEL_WINDOW 256         /* outer IPv6 + UDP + GENEVE with options + Ethernet + VLAN + inner IPv6;
                                   * a power of two (window_at masks offsets with it) */
#define TUNNEL_SLACK 64           /* beyond the window: the largest single header read (40) fits */
#define TUNNEL_WINDOW_SLOTS 4     /* one window per program kind: one may interrupt another on a CPU */
#define TUNNEL_MAX_VLAN 2
#define TUNNEL_MAX_V6_EXT 4
#define TUNNEL_MAX_INNER_V6_EXT 1 /* inside a tunnel: each more header multiplies what the verifier
                                   * explores after the outer parse (4 cost ~0.9 s per diagnose) */
#define TUNNEL_NO_L4 0xffff       /* parse_ip_flow: no transport header to look at */

/* tunnel_flow.has_ports */
#define FLOW_PORTS 1
#define FLOW_ICMP 2

/* Numbers the parser needs; local names, as programs include different subsets of the uapi headers. */
#define TUN_ETH_IP 0x0800
#define TUN_ETH_ARP 0x0806
#define TUN_ETH_IPV6 0x86DD
#define TUN_ETH_TEB 0x6558        /* Transparent Ethernet Bridging: Ethernet inside GRE/GENEVE */
#define TUN_ETH_8021Q 0x8100
#define TUN_ETH_8021AD 0x88A8
#define TUN_P_HOPOPTS 0
#define TUN_P_ICMP 1
#define TUN_P_IPIP 4
#define TUN_P_TCP 6
#define TUN_P_UDP 17
#define TUN_P_IPV6 41
#define TUN_P_ROUTING 43
#define TUN_P_FRAGMENT 44
#define TUN_P_GRE 47
#define TUN_P_ICMPV6 58
#define TUN_P_DSTOPTS 60
#define TUN_P_SCTP 132
#define TUN_P_UDPLITE 136
#define TUN_GRE_CSUM 0x8000
#define TUN_GRE_ROUTING 0x4000
#define TUN_GRE_KEY 0x2000
#define TUN_GRE_SEQ 0x1000
#define TUN_GRE_VERSION 0x0007
#define TUN_VXLAN_VNI_VALID 0x08

/* One flow as seen in a header; the layout trace-drops' event starts its flow with (and
 * bpftools/drop_events.py mirrors). */
struct tunnel_flow {
    __u16 ethertype;   /* host order; 0 if unknown */
    __u8 family;       /* 4, 6, or 0 (not IP) */
    __u8 proto;        /* IP protocol */
    __u16 sport;       /* host order */
    __u16 dport;
    __u8 icmp_type;
    __u8 icmp_code;
    __u8 has_ports;    /* FLOW_PORTS: ports valid, FLOW_ICMP: icmp type/code valid */
    __u8 user;         /* never touched by the parser: a byte for the including program */
    __u8 saddr[16];
    __u8 daddr[16];
};

/* What encapsulates the inner flow; kind ENCAP_NONE: not a tunnel packet. */
struct tunnel_encap {
    __u8 kind;         /* enum encap_type */
    __u8 has_id;       /* id holds the VNI (VXLAN, GENEVE) or the GRE key */
    __u16 dport;       /* UDP tunnels: the outer destination port */
    __u32 id;
};

struct tunnel_window {
    __u32 len;         /* bytes copied into `bytes` */
    __u8 bytes[TUNNEL_WINDOW + TUNNEL_SLACK];
};

BPF_PERCPU_ARRAY(tunnel_windows, struct tunnel_window, TUNNEL_WINDOW_SLOTS);

/* Copy up to TUNNEL_WINDOW of the `avail` bytes at `l3` (kernel memory: an skb's linear data from
 * its network header) into the window `w` (the caller's slot of tunnel_windows, looked up in its
 * own file: bcc rewrites map calls only there). */
static __always_inline void tunnel_window_read(struct tunnel_window *w, const void *l3, __u64 avail)
{
    if (avail > TUNNEL_WINDOW)
        avail = TUNNEL_WINDOW;
    asm volatile("" : "+r"(avail)); /* the verifier must see the bounded value passed, not a copy */
    if (bpf_probe_read_kernel(w->bytes, avail, l3) != 0)
        avail = 0;
    w->len = avail;
}

/* `size` bytes at `off`, or NULL when they are not all in the window. */
static __always_inline const __u8 *window_at(const struct tunnel_window *w, __u32 off, __u32 size)
{
    /* off < len <= TUNNEL_WINDOW, so the mask changes nothing; it is how the verifier sees the
     * access stays inside the buffer (its slack covers the largest header read) */
    const __u8 *p = w->bytes + (off & (TUNNEL_WINDOW - 1));
    if (off + size > w->len)
        p = NULL;
    asm volatile("" : "+r"(p)); /* callers test this very register: clang may not thread the test away */
    return p;
}

static __always_inline __u16 be16_at(const __u8 *p)
{
    return (__u16)p[0] << 8 | p[1];
}

/* The IP header at `off` (ethertype says which family; 0: look at the version) into `f`, walking
 * at most `max_ext` IPv6 extension headers (a constant: the unrolled loop stops there);
 * the offset of its transport header, or TUNNEL_NO_L4 (a later fragment, truncated, not IP). */
static __always_inline __u32 parse_ip_flow(const struct tunnel_window *w, __u32 off, __u16 ethertype,
                                           struct tunnel_flow *f, const int max_ext)
{
    const __u8 *first = window_at(w, off, 1);
    if (!first)
        return TUNNEL_NO_L4;
    __u8 version = first[0] >> 4;
    if (!ethertype) /* locally generated packets before the protocol is set */
        ethertype = version == 4 ? TUN_ETH_IP : version == 6 ? TUN_ETH_IPV6 : 0;
    f->ethertype = ethertype;
    if (ethertype == TUN_ETH_IP) {
        const __u8 *ip = window_at(w, off, 20);
        if (!ip || version != 4)
            return TUNNEL_NO_L4;
        f->family = 4;
        f->proto = ip[9];
        __builtin_memcpy(f->saddr, ip + 12, 4);
        __builtin_memcpy(f->daddr, ip + 16, 4);
        if (be16_at(ip + 6) & 0x1fff)
            return TUNNEL_NO_L4; /* not the first fragment: no transport header */
        return off + (ip[0] & 0x0f) * 4;
    }
    if (ethertype != TUN_ETH_IPV6)
        return TUNNEL_NO_L4;
    const __u8 *ip6 = window_at(w, off, 40);
    if (!ip6 || version != 6)
        return TUNNEL_NO_L4;
    f->family = 6;
    __builtin_memcpy(f->saddr, ip6 + 8, 16);
    __builtin_memcpy(f->daddr, ip6 + 24, 16);
    __u8 next = ip6[6];
    off += 40;
#pragma unroll
    for (int i = 0; i < TUNNEL_MAX_V6_EXT; i++) {
        if (i >= max_ext)
            break;
        if (next != TUN_P_HOPOPTS && next != TUN_P_ROUTING && next != TUN_P_DSTOPTS && next != TUN_P_FRAGMENT)
            break;
        const __u8 *ext = window_at(w, off, 8);
        if (!ext) {
            f->proto = next;
            return TUNNEL_NO_L4;
        }
        if (next == TUN_P_FRAGMENT) {
            next = ext[0];
            off += 8;
            if (be16_at(ext + 2) & 0xfff8) { /* only the first fragment carries the transport header */
                f->proto = next;
                return TUNNEL_NO_L4;
            }
        } else {
            next = ext[0];
            off += (ext[1] + 1) * 8;
        }
    }
    f->proto = next;
    return off;
}

/* Ports, or ICMP type and code, from the transport header at `l4`. */
static __always_inline void parse_transport(const struct tunnel_window *w, __u32 l4, struct tunnel_flow *f)
{
    __u8 proto = f->proto;
    int ports = proto == TUN_P_TCP || proto == TUN_P_UDP || proto == TUN_P_SCTP || proto == TUN_P_UDPLITE;
    int icmp = proto == TUN_P_ICMP || proto == TUN_P_ICMPV6;
    if (!ports && !icmp)
        return;
    const __u8 *p = window_at(w, l4, 4);
    if (!p)
        return;
    if (ports) {
        f->sport = be16_at(p);
        f->dport = be16_at(p + 2);
        f->has_ports = FLOW_PORTS;
    } else {
        f->icmp_type = p[0];
        f->icmp_code = p[1];
        f->has_ports = FLOW_ICMP;
    }
}

/* The whole flow of the IP packet at `off`; its transport offset (TUNNEL_NO_L4: none). */
static __always_inline __u32 parse_flow(const struct tunnel_window *w, __u32 off, __u16 ethertype,
                                        struct tunnel_flow *f, const int max_ext)
{
    __u32 l4 = parse_ip_flow(w, off, ethertype, f, max_ext);
    if (l4 != TUNNEL_NO_L4)
        parse_transport(w, l4, f);
    return l4;
}

/* The tunnel type of a UDP destination port (ENCAP_NONE: not a tunnel port). */
static __always_inline __u8 udp_tunnel_kind(__u16 port)
{
    if (port == 4789 || port == 8472) /* IANA; Linux's and Flannel's historical default */
        return ENCAP_VXLAN;
    if (port == 6081)
        return ENCAP_GENEVE;
#ifdef TUNNEL_VXLAN_PORT0
    if (port == TUNNEL_VXLAN_PORT0)
        return ENCAP_VXLAN;
#endif
#ifdef TUNNEL_VXLAN_PORT1
    if (port == TUNNEL_VXLAN_PORT1)
        return ENCAP_VXLAN;
#endif
#ifdef TUNNEL_VXLAN_PORT2
    if (port == TUNNEL_VXLAN_PORT2)
        return ENCAP_VXLAN;
#endif
#ifdef TUNNEL_VXLAN_PORT3
    if (port == TUNNEL_VXLAN_PORT3)
        return ENCAP_VXLAN;
#endif
#ifdef TUNNEL_GENEVE_PORT0
    if (port == TUNNEL_GENEVE_PORT0)
        return ENCAP_GENEVE;
#endif
#ifdef TUNNEL_GENEVE_PORT1
    if (port == TUNNEL_GENEVE_PORT1)
        return ENCAP_GENEVE;
#endif
    return ENCAP_NONE;
}

/* The 24-bit VNI at p[4..6] (VXLAN and GENEVE alike). */
static __always_inline __u32 vni_at(const __u8 *p)
{
    return (__u32)p[4] << 16 | (__u32)p[5] << 8 | p[6];
}

/* What the outer flow `outer` (transport header at `l4`) encapsulates: fills `encap` and
 * returns the inner packet's offset, *inner_type its ethertype (TUN_ETH_TEB: an Ethernet
 * frame); TUNNEL_NO_L4 when it is no tunnel packet we open. */
static __always_inline __u32 parse_encap(const struct tunnel_window *w, __u32 l4, const struct tunnel_flow *outer,
                                         struct tunnel_encap *encap, __u16 *inner_type)
{
    int v6 = outer->family == 6;
    if (outer->proto == TUN_P_IPIP || outer->proto == TUN_P_IPV6) {
        int inner_v4 = outer->proto == TUN_P_IPIP;
        encap->kind = inner_v4 ? (v6 ? ENCAP_IP4IN6 : ENCAP_IPIP) : (v6 ? ENCAP_IP6IP6 : ENCAP_SIT);
        *inner_type = inner_v4 ? TUN_ETH_IP : TUN_ETH_IPV6;
        return l4;
    }
    if (outer->proto == TUN_P_GRE) {
        const __u8 *gre = window_at(w, l4, 4);
        if (!gre)
            return TUNNEL_NO_L4;
        __u16 flags = be16_at(gre);
        if (flags & (TUN_GRE_VERSION | TUN_GRE_ROUTING)) /* PPTP's enhanced GRE, source routes: not opened */
            return TUNNEL_NO_L4;
        __u32 off = l4 + 4 + (flags & TUN_GRE_CSUM ? 4 : 0);
        if (flags & TUN_GRE_KEY) {
            const __u8 *key = window_at(w, off, 4);
            if (!key)
                return TUNNEL_NO_L4;
            encap->id = (__u32)key[0] << 24 | (__u32)key[1] << 16 | (__u32)key[2] << 8 | key[3];
            encap->has_id = 1;
            off += 4;
        }
        off += flags & TUN_GRE_SEQ ? 4 : 0;
        *inner_type = be16_at(gre + 2);
        encap->kind = *inner_type == TUN_ETH_TEB ? ENCAP_GRETAP : ENCAP_GRE;
        return off;
    }
    if (outer->proto != TUN_P_UDP || outer->has_ports != FLOW_PORTS)
        return TUNNEL_NO_L4;
    __u8 kind = udp_tunnel_kind(outer->dport);
    if (kind == ENCAP_NONE)
        return TUNNEL_NO_L4;
    const __u8 *hdr = window_at(w, l4 + 8, 8);
    if (!hdr)
        return TUNNEL_NO_L4;
    encap->kind = kind;
    encap->dport = outer->dport;
    encap->id = vni_at(hdr);
    if (kind == ENCAP_VXLAN) {
        encap->has_id = (hdr[0] & TUN_VXLAN_VNI_VALID) != 0;
        *inner_type = TUN_ETH_TEB;
        return l4 + 16;
    }
    encap->has_id = 1; /* GENEVE: version, options length in 4-byte words, protocol type */
    if (hdr[0] >> 6)
        return TUNNEL_NO_L4;
    *inner_type = be16_at(hdr + 2);
    return l4 + 16 + (hdr[0] & 0x3f) * 4;
}

/* The Ethernet frame at `off` (up to TUNNEL_MAX_VLAN tags): *ethertype gets what it carries;
 * returns the offset of its payload (TUNNEL_NO_L4: truncated). */
static __always_inline __u32 parse_inner_ethernet(const struct tunnel_window *w, __u32 off, __u16 *ethertype)
{
    const __u8 *eth = window_at(w, off, 14);
    if (!eth)
        return TUNNEL_NO_L4;
    __u16 type = be16_at(eth + 12);
    off += 14;
#pragma unroll
    for (int i = 0; i < TUNNEL_MAX_VLAN; i++) {
        if (type != TUN_ETH_8021Q && type != TUN_ETH_8021AD)
            break;
        const __u8 *tag = window_at(w, off, 4);
        if (!tag)
            return TUNNEL_NO_L4;
        type = be16_at(tag + 2);
        off += 4;
    }
    *ethertype = type;
    return off;
}

/* The packet in the window (its network header first; `ethertype` host order, 0: unknown):
 * `outer` gets its flow; when it is a tunnel packet, `encap` says how and `inner` gets the
 * flow inside (inner->ethertype TUN_ETH_ARP for ARP, family 0). `outer`, `encap` and `inner`
 * must be zeroed by the caller. */
static __always_inline void tunnel_parse(const struct tunnel_window *w, __u16 ethertype, struct tunnel_flow *outer,
                                         struct tunnel_encap *encap, struct tunnel_flow *inner)
{
    __u32 l4 = parse_flow(w, 0, ethertype, outer, TUNNEL_MAX_V6_EXT);
    if (l4 == TUNNEL_NO_L4)
        return;
#ifdef TUNNEL_OUTER_ONLY
    /* nothing on the traced path can encapsulate: opening tunnels would only cost the verifier
     * (the inner parse multiplies the states it explores: ~1 s per load instead of ~ms) */
    return;
#endif
    __u16 inner_type = 0;
    __u32 off = parse_encap(w, l4, outer, encap, &inner_type);
    if (off == TUNNEL_NO_L4)
        return;
    if (inner_type == TUN_ETH_TEB)
        off = parse_inner_ethernet(w, off, &inner_type);
    if (off == TUNNEL_NO_L4)
        return;
    if (inner_type == TUN_ETH_ARP) {
        inner->ethertype = TUN_ETH_ARP;
        return;
    }
    if (inner_type == TUN_ETH_IP || inner_type == TUN_ETH_IPV6)
        parse_flow(w, off, inner_type, inner, TUNNEL_MAX_INNER_V6_EXT);
}

#endif
