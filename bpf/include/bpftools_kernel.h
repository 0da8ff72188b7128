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

#endif
