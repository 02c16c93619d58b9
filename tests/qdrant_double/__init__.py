"""A stand-in for a Qdrant 1.19 node, served over real HTTP for tests.

Public surface (see ``server.QdrantDouble``)::

    double = QdrantDouble(root, api_key=None, peer_id=1234567890, version="1.19.0")
    url = double.start()                 # http://127.0.0.1:<port>
    double.create_collection("c", points=100, size_bytes=64 * 1024, shard_number=1, vector_size=4)
    double.points_count("c"); double.drop_collection("c"); double.collection_exists("c")
    double.snapshots_path                # <root>/snapshots, Qdrant's snapshots_path
    double.snapshot_files("c", shard_id=None)   # files in a snapshot dir, sidecars included
    double.faults.fail_next(n, status=503, path_contains=None, plain_text=False)
    double.faults.throttle(bytes_per_sec) / cut_after(n_bytes) / stall(seconds) / corrupt_downloads(True)
    double.faults.stall_requests(path_contains, seconds, method=None, times=1)  # hold matching requests
    double.faults.throttle_uploads(bytes_per_sec)  # read upload bodies slowly
    double.faults.reset()
    double.requests_seen                 # [(method, path), ...]
    double.enable_cluster(peers={...}) / disable_cluster(); double.set_shard_state("c", 0, "Dead")
    double.wait_for_background(timeout)  # wait=false work finished?
    double.background_errors             # messages of failed wait=false work (Qdrant only logs them)
    double.remote_shards["c"] = [...]    # remote_shards of GET /collections/c/cluster
    double.clock = lambda: datetime(...)  # "now" for snapshot names (1 s resolution, like Qdrant)
    double.api_key = "k"                 # may be changed while running
    double.stop()
    double.start(port=None)              # a fixed port (a peer revived on its old one)

A distributed Qdrant of several doubles: ``cluster.DoubleCluster`` (its docstring lists its surface).
"""

from tests.qdrant_double.cluster import ClusterLayout, DoubleCluster
from tests.qdrant_double.faults import Faults
from tests.qdrant_double.server import QdrantDouble

__all__ = ["ClusterLayout", "DoubleCluster", "Faults", "QdrantDouble"]
