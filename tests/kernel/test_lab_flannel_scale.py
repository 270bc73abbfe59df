"""labs/flannel-scale.yaml on the real kernel: 10 nodes × 20 pods on the VXLAN overlay
(211 namespaces), its sampled all-pairs checks, one test each. `bench/cluster` times it."""

from netlab.pytest_plugin import lab_checks

test_flannel_scale = lab_checks("labs/flannel-scale.yaml", unique=True)
