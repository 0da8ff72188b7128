/* bpftools trace-drops: every packet the kernel frees with a drop reason (skb:kfree_skb).
 *
 * Two entry points, same logic:
 *   bpftools_drops  raw tracepoint: ctx->args = (skb, location, reason, rx_sk)  (cheapest)
 *   bpftools_dropt  perf tracepoint fallback: fields at TP_OFF_* from the format file
 *
 * Everything user space does not want is filtered here, before any copy to user space:
 * reason set (wanted or excluded), (netns inode, ifindex) pairs or netns set, protocol,
 * source/destination CIDR, ports. sk_buff / net_device / net / sock / dst_entry are read only through the BTF
 * offsets (OFF_*) in bpftools_kernel.h. Configuration arrives as -D defines and maps:
 *
 *   HAVE_DROP_REASON          the tracepoint carries `reason` (5.17+)
 *   FILTER_IFACES             look (netns, ifindex) up in `iface_filter`
 *   FILTER_NETNS              look netns inode up in `netns_filter`
 *   FILTER_REASONS            look reason up in `reason_filter`
 *   FILTER_EXCLUDE_REASONS    skip reasons found in `reason_exclude`
 *   FILTER_PROTO=N            IP protocol number
 *   FILTER_SRC_FAMILY=4|6 + FILTER_SRC_W0..3 / FILTER_SRC_M0..3 (address/mask words as
 *                             loaded from memory); same for FILTER_DST_*
 *   FILTER_PORT=N             TCP/UDP/SCTP/UDP-Lite source or destination port N
 *   FILTER_SPORT=N / FILTER_DPORT=N   source / destination port
 *   STACK_DEPTH=N             kernel stack (N return addresses) after each event
 *   SNAPLEN=N                 up to N bytes of an IP packet from its network header after that
 *   SUMMARY_ONLY              count only, no per-drop events
 *   TP_OFF_SKBADDR/TP_OFF_LOCATION/TP_OFF_REASON   offsets in the perf tracepoint record
 *   IGNORE_LOC<n>_START/_END  kernel text ranges whose frees are not packet drops
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include "ipproto.h"   /* not <uapi/linux/in.h>: see ipproto.h */
#include "bpftools_kernel.h"

#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 256
#endif
#define MAX_COUNT_KEYS 16384
#define IFNAMSIZ_ 16
#define MAX_V6_EXT 4
#define IPPROTO_ICMPV6_ 58
#define IPV6_HOPOPTS_ 0
#define IPV6_ROUTING_ 43
#define IPV6_DSTOPTS_ 60
#define SKB_DST_PTRMASK ~1UL   /* low bit of _skb_refdst: SKB_DST_NOREF */
#define MAC_HEADER_UNSET 0xffff
#ifndef STACK_DEPTH
#define STACK_DEPTH 0
#endif
#ifndef SNAPLEN
#define SNAPLEN 0
#endif
#if defined(FILTER_PROTO) || defined(FILTER_SRC_FAMILY) || defined(FILTER_DST_FAMILY) || \
    defined(FILTER_PORT) || defined(FILTER_SPORT) || defined(FILTER_DPORT)
#define FILTER_PACKETS
#endif

struct iface_key {
    u32 netns;
    u32 ifindex;
};

struct count_key {
    u32 netns;
    u32 ifindex;
    u32 reason;
};

/* Mirrored by EVENT_LAYOUT in bpftools/trace_drops.py. */
struct drop_event {
    u64 ts_ns;
    u64 location;
    u32 netns;
    u32 ifindex;
    u32 reason;
    u32 len;
    u16 ethertype;      /* host order; 0 if unknown */
    u8 family;          /* 4, 6, or 0 (not IP) */
    u8 proto;           /* IP protocol */
    u16 sport;          /* host order */
    u16 dport;
    u8 icmp_type;
    u8 icmp_code;
    u8 has_ports;       /* 1 ports valid, 2 icmp type/code valid */
    u8 dev_known;       /* ifname came from the skb's device */
    u8 saddr[16];
    u8 daddr[16];
    char ifname[IFNAMSIZ_];
    u16 stack_bytes;    /* bytes of `stack` filled */
    u16 caplen;         /* bytes of `packet` filled */
};

/* What the ring buffer carries: the event, then the optional stack and packet bytes
 * (sizes fixed at compile time; user space knows STACK_DEPTH and SNAPLEN). */
struct drop_record {
    struct drop_event event;
#if STACK_DEPTH
    u64 stack[STACK_DEPTH];
#endif
#if SNAPLEN
    u8 packet[SNAPLEN];
#endif
};

BPF_PERCPU_HASH(drop_counts, struct count_key, u64, MAX_COUNT_KEYS);
BPF_PERCPU_ARRAY(lost_events, u64, 1);
BPF_HASH(iface_filter, struct iface_key, u8, 1024);
BPF_HASH(netns_filter, u32, u8, 1024);
BPF_HASH(reason_filter, u32, u8, 256);
BPF_HASH(reason_exclude, u32, u8, 256);
#ifndef SUMMARY_ONLY
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
#endif

struct where {
    const void *dev;   /* device whose name we report, NULL if none */
    u32 netns;
    u32 ifindex;
};

/* Where the drop happened. skb->dev when set (receive path, forwarding, qdisc, neigh).
 * Without a device (a locally generated packet before ip_output, a packet already queued
 * to a socket) the namespace comes from the route's device (skb_dst()->dev), else from
 * the socket, and the interface is skb_iif (the device it arrived on) when it was
 * received, else the route's output device. */
/* ifindex and nd_net of a device; one read when they are close (they are 40 bytes apart on
 * 6.x), which matters at hundreds of thousands of drops per second. The read starts at the
 * 8-byte boundary below ifindex into a u64 array, so every load from the copy is naturally
 * aligned (the verifier rejects misaligned stack loads) whatever the two offsets are; layouts
 * where that cannot hold (nd_net not 8-aligned, ifindex not 4-aligned) take two reads. */
#define DEV_SPAN_START (OFF_DEV_IFINDEX & ~7)
#if OFF_DEV_ND_NET > OFF_DEV_IFINDEX && OFF_DEV_ND_NET % 8 == 0 && OFF_DEV_IFINDEX % 4 == 0 && \
    OFF_DEV_ND_NET + 8 - DEV_SPAN_START <= 64
#define DEV_SPAN_WORDS ((OFF_DEV_ND_NET + 8 - DEV_SPAN_START) / 8)
static __always_inline void dev_place(const void *dev, struct where *w)
{
    u64 span[DEV_SPAN_WORDS];
    if (bpf_probe_read_kernel(span, sizeof(span), (const char *)dev + DEV_SPAN_START) != 0)
        return;
    const void *net = (const void *)span[(OFF_DEV_ND_NET - DEV_SPAN_START) / 8];
    w->ifindex = ((u32 *)span)[(OFF_DEV_IFINDEX - DEV_SPAN_START) / 4];
    w->netns = net ? kread_u32(net, OFF_NET_NS_INUM) : 0;
}
#else
static __always_inline void dev_place(const void *dev, struct where *w)
{
    w->netns = dev_netns_inode(dev);
    w->ifindex = kread_u32(dev, OFF_DEV_IFINDEX);
}
#endif

static __always_inline int locate(const void *skb, struct where *w)
{
    const void *dev = kread_ptr(skb, OFF_SKB_DEV);
    if (dev) {
        w->dev = dev;
        dev_place(dev, w);
        return 1;
    }
    w->dev = NULL;
    u32 iif = kread_u32(skb, OFF_SKB_IIF);
    const void *dst = (const void *)(kread_u64(skb, OFF_SKB_REFDST) & SKB_DST_PTRMASK);
    const void *dst_dev = dst ? kread_ptr(dst, OFF_DST_DEV) : NULL;
    if (dst_dev) {
        w->netns = dev_netns_inode(dst_dev);
        if (!iif) {
            w->dev = dst_dev;
            iif = kread_u32(dst_dev, OFF_DEV_IFINDEX);
        }
    } else {
        if (!iif)
            return 0; /* never met a device or a route: a socket's own buffer (netlink...), not a packet */
        const void *sk = kread_ptr(skb, OFF_SKB_SK);
        const void *net = sk ? kread_ptr(sk, OFF_SK_NET) : NULL;
        w->netns = net ? kread_u32(net, OFF_NET_NS_INUM) : 0;
    }
    w->ifindex = iif;
    return 1;
}

static __always_inline int wanted_place(const struct where *w)
{
#ifdef FILTER_IFACES
    struct iface_key key = {.netns = w->netns, .ifindex = w->ifindex};
    if (!iface_filter.lookup(&key))
        return 0;
#endif
#ifdef FILTER_NETNS
    u32 ns = w->netns;
    if (!netns_filter.lookup(&ns))
        return 0;
#endif
    return 1;
}

/* Where an skb's packet is: its buffer, the end of the linear data and the network header
 * (both offsets from head), and skb->protocol (network order). */
struct l3_span {
    const unsigned char *head;
    u32 tail;
    u16 nh;
    u16 protocol;
};

/* The four are within 24 bytes of each other on 6.x (protocol..head): one read, as in
 * dev_place, into u64 words so every load from the copy is naturally aligned; other layouts
 * take one read per field. */
#define SKB_SPAN_START (OFF_SKB_PROTOCOL & ~7)
#define SKB_SPAN_END (OFF_SKB_HEAD + 8)
#if OFF_SKB_HEAD % 8 == 0 && OFF_SKB_PROTOCOL % 2 == 0 && OFF_SKB_NETWORK_HEADER % 2 == 0 && \
    SIZE_SKB_TAIL == 4 && OFF_SKB_TAIL % 4 == 0 && \
    OFF_SKB_NETWORK_HEADER >= SKB_SPAN_START && OFF_SKB_TAIL >= SKB_SPAN_START && \
    OFF_SKB_PROTOCOL + 2 <= OFF_SKB_HEAD && OFF_SKB_NETWORK_HEADER + 2 <= OFF_SKB_HEAD && \
    OFF_SKB_TAIL + 4 <= OFF_SKB_HEAD && SKB_SPAN_END - SKB_SPAN_START <= 64
static __always_inline void l3_place(const void *skb, struct l3_span *s)
{
    u64 span[(SKB_SPAN_END - SKB_SPAN_START) / 8];
    bpf_probe_read_kernel(span, sizeof(span), (const char *)skb + SKB_SPAN_START); /* zeroed on failure */
    s->head = (const unsigned char *)span[(OFF_SKB_HEAD - SKB_SPAN_START) / 8];
    s->tail = ((u32 *)span)[(OFF_SKB_TAIL - SKB_SPAN_START) / 4];
    s->nh = ((u16 *)span)[(OFF_SKB_NETWORK_HEADER - SKB_SPAN_START) / 2];
    s->protocol = ((u16 *)span)[(OFF_SKB_PROTOCOL - SKB_SPAN_START) / 2];
}
#else
static __always_inline void l3_place(const void *skb, struct l3_span *s)
{
    s->head = kread_ptr(skb, OFF_SKB_HEAD);
#if SIZE_SKB_TAIL == 8 /* 32-bit kernels: a pointer */
    const unsigned char *tail = kread_ptr(skb, OFF_SKB_TAIL);
    s->tail = tail ? tail - s->head : 0;
#else
    s->tail = kread_u32(skb, OFF_SKB_TAIL);
#endif
    s->nh = kread_u16(skb, OFF_SKB_NETWORK_HEADER);
    s->protocol = kread_u16(skb, OFF_SKB_PROTOCOL);
}
#endif

/* Packet parsing from skb->head + network_header (not the MAC header, so devices without
 * an Ethernet header work). Fills family/addresses/proto/ports/ICMP; returns the network
 * header of an IP packet, NULL otherwise. One read of 44 bytes covers the IPv4 header and
 * its ports (no options) or the IPv6 header and its ports (no extension headers). */
static __always_inline const unsigned char *parse_packet(const struct l3_span *s, struct drop_event *e)
{
    u16 ethertype = bpf_ntohs(s->protocol);
    if (!s->head || s->nh == MAC_HEADER_UNSET)
        return NULL;
    const unsigned char *l3 = s->head + s->nh;
    u8 hdr[44] = {};
    bpf_probe_read_kernel(hdr, sizeof(hdr), l3);
    u8 version = hdr[0] >> 4;
    if (!ethertype) /* locally generated packets before the protocol is set: look at the version */
        ethertype = version == 4 ? ETH_P_IP : version == 6 ? ETH_P_IPV6 : 0;
    e->ethertype = ethertype;

    const unsigned char *l4 = NULL; /* set when the transport header is beyond `hdr` */
    u8 proto;
    u8 l4h[4] = {};
    if (ethertype == ETH_P_IP) {
        if (version != 4)
            return NULL;
        e->family = 4;
        proto = hdr[9];
        __builtin_memcpy(e->saddr, hdr + 12, 4);
        __builtin_memcpy(e->daddr, hdr + 16, 4);
        u16 frag = ((u16)hdr[6] << 8 | hdr[7]) & 0x1fff;
        e->proto = proto;
        if (frag)
            return l3; /* not the first fragment: no transport header */
        u8 ihl = hdr[0] & 0x0f;
        if (ihl == 5)
            __builtin_memcpy(l4h, hdr + 20, 4);
        else
            l4 = l3 + ihl * 4;
    } else if (ethertype == ETH_P_IPV6) {
        if (version != 6)
            return NULL;
        e->family = 6;
        proto = hdr[6];
        __builtin_memcpy(e->saddr, hdr + 8, 16);
        __builtin_memcpy(e->daddr, hdr + 24, 16);
        __builtin_memcpy(l4h, hdr + 40, 4);
        const unsigned char *next = l3 + 40;
#pragma unroll
        for (int i = 0; i < MAX_V6_EXT; i++) {
            if (proto != IPV6_HOPOPTS_ && proto != IPV6_ROUTING_ && proto != IPV6_DSTOPTS_)
                break;
            u8 ext[2] = {};
            bpf_probe_read_kernel(ext, sizeof(ext), next);
            proto = ext[0];
            next += (ext[1] + 1) * 8;
            l4 = next;
        }
        e->proto = proto;
    } else {
        return NULL;
    }
    int ports = proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP || proto == IPPROTO_UDPLITE;
    int icmp = proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6_;
    if (l4 && (ports || icmp))
        bpf_probe_read_kernel(l4h, sizeof(l4h), l4);
    if (ports) {
        e->sport = (u16)l4h[0] << 8 | l4h[1];
        e->dport = (u16)l4h[2] << 8 | l4h[3];
        e->has_ports = 1;
    } else if (icmp) {
        e->icmp_type = l4h[0];
        e->icmp_code = l4h[1];
        e->has_ports = 2;
    }
    return l3;
}

#if defined(FILTER_SRC_FAMILY) || defined(FILTER_DST_FAMILY)
static __always_inline int addr_in(const u8 *addr, u32 w0, u32 w1, u32 w2, u32 w3,
                                   u32 m0, u32 m1, u32 m2, u32 m3)
{
    u32 a[4] = {};
    __builtin_memcpy(a, addr, 16);
    return (a[0] & m0) == w0 && (a[1] & m1) == w1 && (a[2] & m2) == w2 && (a[3] & m3) == w3;
}
#endif

static __always_inline int wanted_packet(const struct drop_event *e)
{
#ifdef FILTER_PROTO
    if (!e->family || e->proto != FILTER_PROTO)
        return 0;
#endif
#ifdef FILTER_SRC_FAMILY
    if (e->family != FILTER_SRC_FAMILY ||
        !addr_in(e->saddr, FILTER_SRC_W0, FILTER_SRC_W1, FILTER_SRC_W2, FILTER_SRC_W3,
                 FILTER_SRC_M0, FILTER_SRC_M1, FILTER_SRC_M2, FILTER_SRC_M3))
        return 0;
#endif
#ifdef FILTER_DST_FAMILY
    if (e->family != FILTER_DST_FAMILY ||
        !addr_in(e->daddr, FILTER_DST_W0, FILTER_DST_W1, FILTER_DST_W2, FILTER_DST_W3,
                 FILTER_DST_M0, FILTER_DST_M1, FILTER_DST_M2, FILTER_DST_M3))
        return 0;
#endif
#if defined(FILTER_PORT) || defined(FILTER_SPORT) || defined(FILTER_DPORT)
    if (e->has_ports != 1)
        return 0; /* no transport ports (ICMP, a later fragment, not IP) */
#endif
#ifdef FILTER_PORT
    if (e->sport != FILTER_PORT && e->dport != FILTER_PORT)
        return 0;
#endif
#ifdef FILTER_SPORT
    if (e->sport != FILTER_SPORT)
        return 0;
#endif
#ifdef FILTER_DPORT
    if (e->dport != FILTER_DPORT)
        return 0;
#endif
    return 1;
}

static __always_inline void note_lost(void)
{
    u32 zero = 0;
    u64 *lost = lost_events.lookup(&zero);
    if (lost)
        *lost += 1;
}

/* Whether the packet passes --proto/--src/--dst/--port... (parsed only when one is given). */
static __always_inline int packet_wanted(const void *skb)
{
#ifdef FILTER_PACKETS
    struct drop_event pkt = {};
    struct l3_span span;
    l3_place(skb, &span);
    parse_packet(&span, &pkt);
    return wanted_packet(&pkt);
#else
    return 1;
#endif
}

static __always_inline void count_drop(const struct where *w, u32 reason)
{
    struct count_key key = {.netns = w->netns, .ifindex = w->ifindex, .reason = reason};
    u64 *value = drop_counts.lookup(&key);
    if (value) {
        *value += 1; /* per-CPU: no atomics needed */
        return;
    }
    u64 one = 1;
    if (drop_counts.update(&key, &one) != 0)
        note_lost(); /* map full */
}

#if SNAPLEN
/* Up to SNAPLEN bytes from the network header, within the skb's linear data (what is in
 * page fragments beyond skb->tail is not copied: the capture is truncated there). */
static __always_inline u16 copy_packet(const struct l3_span *s, const unsigned char *l3, u8 *out)
{
    const unsigned char *tail = s->head + s->tail;
    if (tail <= l3)
        return 0;
    u64 n = tail - l3;
    if (n > SNAPLEN)
        n = SNAPLEN;
    asm volatile("" : "+r"(n)); /* the verifier must see the bounded value passed, not a copy */
    if (bpf_probe_read_kernel(out, n, l3) != 0)
        return 0;
    return n;
}
#endif

static __always_inline int handle_drop(void *ctx, const void *skb, u64 location, u32 reason)
{
#ifdef IGNORE_LOC0_START
    /* `ip route get` (inet_rtm_getroute) frees the dummy skb it routed: not a packet drop */
    if (location >= IGNORE_LOC0_START && location < IGNORE_LOC0_END)
        return 0;
#endif
#ifdef IGNORE_LOC1_START
    if (location >= IGNORE_LOC1_START && location < IGNORE_LOC1_END)
        return 0;
#endif
#ifdef FILTER_REASONS
    if (!reason_filter.lookup(&reason))
        return 0;
#endif
#ifdef FILTER_EXCLUDE_REASONS
    if (reason_exclude.lookup(&reason))
        return 0;
#endif
    struct where w = {};
    if (!locate(skb, &w) || !wanted_place(&w))
        return 0;

#ifdef SUMMARY_ONLY
    if (packet_wanted(skb))
        count_drop(&w, reason);
#else
    struct drop_record *r = events.ringbuf_reserve(sizeof(struct drop_record));
    if (!r) { /* ring buffer full: still counted, and the loss is reported */
        if (packet_wanted(skb)) {
            count_drop(&w, reason);
            note_lost();
        }
        return 0;
    }
    struct drop_event *e = &r->event;
    __builtin_memset(e, 0, sizeof(*e));
    struct l3_span span;
    l3_place(skb, &span);
    const unsigned char *l3 = parse_packet(&span, e);
    if (!wanted_packet(e)) {
        events.ringbuf_discard(r, 0);
        return 0;
    }
    count_drop(&w, reason);
    e->ts_ns = bpf_ktime_get_ns();
    e->location = location;
    e->netns = w.netns;
    e->ifindex = w.ifindex;
    e->reason = reason;
    e->len = kread_u32(skb, OFF_SKB_LEN);
    if (w.dev) {
        bpf_probe_read_kernel_str(e->ifname, sizeof(e->ifname), (const char *)w.dev + OFF_DEV_NAME);
        e->dev_known = 1;
    }
#if STACK_DEPTH
    long stack_bytes = bpf_get_stack(ctx, r->stack, sizeof(r->stack), 0);
    e->stack_bytes = stack_bytes > 0 ? stack_bytes : 0;
#endif
#if SNAPLEN
    if (l3)
        e->caplen = copy_packet(&span, l3, r->packet);
#endif
    events.ringbuf_submit(r, 0);
#endif
    return 0;
}

int bpftools_drops(struct bpf_raw_tracepoint_args *ctx)
{
#ifdef HAVE_DROP_REASON
    u32 reason = (u32)ctx->args[2];
#else
    u32 reason = 0;
#endif
    return handle_drop(ctx, (const void *)ctx->args[0], ctx->args[1], reason);
}

int bpftools_dropt(void *ctx)
{
    const void *skb = kread_ptr(ctx, TP_OFF_SKBADDR);
    u64 location = kread_u64(ctx, TP_OFF_LOCATION);
#ifdef HAVE_DROP_REASON
    u32 reason = kread_u32(ctx, TP_OFF_REASON);
#else
    u32 reason = 0;
#endif
    return handle_drop(ctx, skb, location, reason);
}
