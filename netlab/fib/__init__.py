"""The kernel's routing decision (the FIB and its policy rules), as pure functions over
the values of netlab.observations: what a route query may ask (query), which rule
selects a flow and which one decided a lookup (lookup), and how routes, rules and
tables read in evidence, as `ip route get` and `ip rule` print them (text).

No netlink here: netlab.kernel.routes asks the kernel and uses these to explain its
answer; the judges and the fake observer use them without root.
"""
