/* Tiny programs `bpftools doctor` loads to probe what this kernel really supports. */
#include <uapi/linux/bpf.h>

int bpftools_xdp(struct xdp_md *ctx)
{
    return XDP_PASS;
}

int bpftools_tc(struct __sk_buff *skb)
{
    return 0; /* TC_ACT_OK */
}

int bpftools_kprobe(void *ctx)
{
    return 0;
}

int bpftools_tp(void *ctx)
{
    return 0;
}
