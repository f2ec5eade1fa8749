"""The throwaway etcd server of tests (it lives in `hyperwall.lab.etcd`: benchmarks use it too)."""

from hyperwall.lab.etcd import EtcdProcess, free_port

__all__ = ["EtcdProcess", "free_port"]
