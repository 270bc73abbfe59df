"""Real traffic through a lab, and what happened to it.

- `netlab.probes.responder_server`: one detached process serving tcp/udp/http responders
  in lab namespaces; each answer names the node that served it and the peer it saw.
  `netlab.probes.responders` starts, finds and stops it (the parent's side).
- `netlab.probes.flow`: probe()/probe_many() send icmp/tcp/udp/http flows from inside a
  namespace and classify the outcome (ok, timeout, refused, unreachable, error).
- `netlab.probes.checks`: runs a lab's `checks:`: probes, then what the kernel shows of
  them through a KernelObserver (netlab.kernel.observer); `netlab.probes.judge` and
  `netlab.probes.drops` decide, without I/O.

Nothing is imported here: the responder process starts with `python -m`, and should not
pay for the probe side's imports.
"""
