"""Appliers: the only code that touches the kernel (iptables, ipsets, routes, sysctls)."""
