"""kernel: the only package that talks to the kernel (pyroute2's message classes,
libnftables); everything above it sees two seams and plain values.

Writing (`netlab up`): driver.py is the seam (KernelDriver; fake.py fakes it).
netlink.py implements it and keeps only scheduling (a few workers taking namespaces in
turn), namespaces (netns.py) and sockets; what each op becomes lives elsewhere:
encode.py (rtnetlink messages, pure), ipvs.py and ipset.py (their requests, pure, and
their apply), nft.py (rulesets and iptables dumps), sysctl.py, command.py (`exec:`).

Reading (`netlab check`): observer.py is the seam (KernelObserver; fake_observer.py
fakes it), observe.py implements it over one reader per kind of state: routes.py,
conntrack.py, ipvs.py, capture.py, drops.py, each run inside the namespace by inside.py.

Both sides send and read netlink through nlsock.py, the one socket layer (batched
requests with ACKs, queries, dumps; rtnetlink, generic netlink, nfnetlink).
features.py probes what the kernel can do (`netlab doctor`, a lab's `requires:`).
"""
