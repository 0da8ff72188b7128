/* bpftools trace-drops: every packet the kernel frees with a drop reason (skb:kfree_skb).
 *
 * Two entry points, same logic:
 *   bpftools_drops  raw tracepoint: ctx->args = (skb, location, reason, rx_sk)  (cheapest)
 *   bpftools_dropt  perf tracepoint fallback: fields at TP_OFF_* from the format file
 *
 * Everything user space does not want is filtered here, before any copy to user space:
 * reason set (wanted or excluded), (netns inode, ifindex) pairs or netns set, protocol,
 * source/destination CIDR, ports (each set of packet filters matched against the packet's own
 * flow or, for a tunnel packet, the flow inside it: tunnel.h). sk_buff / net_device / net / sock / dst_entry are read only through the BTF
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
 *   TUNNEL_VXLAN_PORT0..3 / TUNNEL_GENEVE_PORT0..1  UDP ports of tunnels besides the defaults
 *   TP_OFF_SKBADDR/TP_OFF_LOCATION/TP_OFF_REASON   offsets in the perf tracepoint record
 *   IGNORE_LOC<n>_START/_END  kernel text ranges whose frees are not packet drops
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include "ipproto.h"   /* not <uapi/linux/in.h>: see ipproto.h */
#include "bpftools_kernel.h"
#include "tunnel.h"

#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 256
#endif
#define MAX_COUNT_KEYS 16384
#define IFNAMSIZ_ 16
#define SKB_DST_PTRMASK ~1UL   /* low bit of _skb_refdst: SKB_DST_NOREF */
#define WINDOW_SLOT_DROPS 0    /* this program's tunnel_windows slot (diagnose's counters use others) */
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

/* Mirrored by EVENT_LAYOUT in bpftools/drop_events.py. */
struct drop_event {
    u64 ts_ns;
    u64 location;
    u32 netns;
    u32 ifindex;
    u32 reason;
    u32 len;
    struct tunnel_flow flow;    /* the packet as dropped (a tunnel packet's outer flow); flow.user: ifname
                                 * came from the skb's device */
    char ifname[IFNAMSIZ_];
    u16 stack_bytes;    /* bytes of `stack` filled */
    u16 caplen;         /* bytes of `packet` filled */
    struct tunnel_encap encap;  /* kind ENCAP_NONE: not a tunnel packet */
    struct tunnel_flow inner;   /* the flow inside a tunnel packet */
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

/* The packet from skb->head + network_header (not the MAC header, so devices without an
 * Ethernet header work): its flow into e->flow and, for a tunnel packet, e->encap and e->inner
 * (tunnel.h). Returns the network header of an IP packet, NULL otherwise. */
static __always_inline const unsigned char *parse_packet(const struct l3_span *s, struct drop_event *e)
{
    if (!s->head || s->nh == MAC_HEADER_UNSET)
        return NULL;
    const unsigned char *l3 = s->head + s->nh;
    u32 slot = WINDOW_SLOT_DROPS;
    struct tunnel_window *w = tunnel_windows.lookup(&slot);
    if (!w)
        return NULL;
    tunnel_window_read(w, l3, s->tail > s->nh ? s->tail - s->nh : 0);
    tunnel_parse(w, bpf_ntohs(s->protocol), &e->flow, &e->encap, &e->inner);
    return e->flow.family ? l3 : NULL;
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

static __always_inline int wanted_flow(const struct tunnel_flow *e)
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
    if (e->has_ports != FLOW_PORTS)
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

/* --proto/--src/--dst/--port... all hold for the packet's own flow, or all for the flow inside
 * a tunnel packet. */
static __always_inline int wanted_packet(const struct drop_event *e)
{
    return wanted_flow(&e->flow) || (e->encap.kind != ENCAP_NONE && wanted_flow(&e->inner));
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
        e->flow.user = 1;
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
