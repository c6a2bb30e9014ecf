//! aya loader: loads, pins and attaches NovaNet's eBPF programs; typed access to its maps.
