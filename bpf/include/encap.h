/* What the encap-stats classifier and its Python reader share: the closed set of tunnel
 * types (the one list; bpftools/encap_stats.py mirrors it in ENCAP_TYPES and a unit test
 * checks both agree), directions, and the map key/value layouts. */
#ifndef BPFTOOLS_ENCAP_H
#define BPFTOOLS_ENCAP_H

enum encap_type {
    ENCAP_NONE = 0,
    ENCAP_IPIP = 1,     /* IPv4 in IPv4 (IP protocol 4) */
    ENCAP_SIT = 2,      /* IPv6 in IPv4 (IP protocol 41) */
    ENCAP_IP6IP6 = 3,   /* IPv6 in IPv6 (next header 41) */
    ENCAP_IP4IN6 = 4,   /* IPv4 in IPv6 (next header 4) */
    ENCAP_GRE = 5,      /* GRE (47) carrying anything but Ethernet */
    ENCAP_GRETAP = 6,   /* GRE carrying Ethernet (Transparent Ethernet Bridging, 0x6558) */
    ENCAP_VXLAN = 7,    /* UDP, destination port 4789 or user-given */
    ENCAP_GENEVE = 8,   /* UDP, destination port 6081 or user-given */
    ENCAP_FOU = 9,      /* UDP, user-given ports only */
    ENCAP_GUE = 10,     /* UDP, user-given ports only */
    ENCAP_TYPE_COUNT = 11,
};

enum encap_direction {
    ENCAP_DIR_INGRESS = 0,
    ENCAP_DIR_EGRESS = 1,
    ENCAP_DIR_COUNT = 2,
};

/* Interfaces one classifier instance counts; counters are indexed
 * ((slot * ENCAP_DIR_COUNT) + direction) * ENCAP_TYPE_COUNT + type. */
#define ENCAP_MAX_IFACES 8

/* The udp_ports map: a 4-bit type per UDP port, UDP_PORTS_PER_WORD ports per 64-bit word. */
#define UDP_PORT_TYPE_BITS 4
#define UDP_PORTS_PER_WORD 16
#define UDP_PORT_WORDS (65536 / UDP_PORTS_PER_WORD)

struct encap_counter {
    __u64 packets;
    __u64 bytes;
};

/* Key of the LRU map of outer endpoint pairs (--top); IPv4 addresses use the first 4 bytes. */
struct encap_pair_key {
    __u8 type;
    __u8 family;  /* 4 or 6 */
    __u16 pad;
    __u8 src[16];
    __u8 dst[16];
};

#endif
