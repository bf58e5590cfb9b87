"""The Docker libnetwork remote network driver (calico) and IPAM driver (calico-ipam)."""
