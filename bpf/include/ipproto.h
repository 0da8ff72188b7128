/* IP protocol numbers (IANA: the same on every kernel), for programs that would otherwise
 * include <uapi/linux/in.h> only for them: its include chain (linux/socket.h, uio.h, …) makes a
 * bcc compile several times slower, and the compile is most of the time `diagnose ping` and
 * `trace-drops` take to start. A program including this must not include <linux/in.h> too.
 * (The IPv6 ones, IPPROTO_HOPOPTS … IPPROTO_ICMPV6, come from the cheap <uapi/linux/in6.h>.) */
#ifndef BPFTOOLS_IPPROTO_H
#define BPFTOOLS_IPPROTO_H

#define IPPROTO_ICMP 1
#define IPPROTO_IPIP 4
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_GRE 47
#define IPPROTO_SCTP 132
#define IPPROTO_UDPLITE 136

#endif
