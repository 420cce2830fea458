"""Scale-out on Ray (optional extra ``nncift[ray]``; docs/scaling.md).

* `cluster`: connecting (with a reachability timeout), version and GPU checks, `RaySettings`.
* `labels`: influence labels computed by Ray actors that hold the LM, streamed into the same
  resumable label folder as a local run (`nncift.influence.store`).
* `shards`: scoring with the Rust scorer and partition-and-merge selection with the Rust
  engine, one Ray task per pool shard; the same answers as the local paths.

Ray is imported only when one of these is used.
"""
