"""One source of facts about a network namespace, shared by trace-drops' hints and diagnose:
netfilter.py parses its firewall (iptables-save text, nft JSON), namespace.py reads its live
state, rtnl.py names rtnetlink numbers. What each drop reason means lives in drop_causes.py."""
