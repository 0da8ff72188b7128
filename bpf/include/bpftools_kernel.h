/* Reads of kernel-internal structs through offsets taken from BTF at run time
 * (OFF_* / SIZE_* defines from bpftools.kernel.offsets), never from header layouts. */
#ifndef BPFTOOLS_KERNEL_H
#define BPFTOOLS_KERNEL_H

static __always_inline u64 kread_u64(const void *base, int off)
{
    u64 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), (const char *)base + off);
    return v;
}

static __always_inline u32 kread_u32(const void *base, int off)
{
    u32 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), (const char *)base + off);
    return v;
}

static __always_inline u16 kread_u16(const void *base, int off)
{
    u16 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), (const char *)base + off);
    return v;
}

static __always_inline void *kread_ptr(const void *base, int off)
{
    return (void *)kread_u64(base, off);
}

/* Inode of the network namespace a net_device lives in (what `ip netns` names). */
static __always_inline u32 dev_netns_inode(const void *dev)
{
    const void *net = kread_ptr(dev, OFF_DEV_ND_NET);
    return net ? kread_u32(net, OFF_NET_NS_INUM) : 0;
}

#define MAC_HEADER_UNSET 0xffff

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

#endif
