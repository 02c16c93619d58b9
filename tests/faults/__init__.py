"""Faults survived, proved with real processes (``qbm worker``, ``qbm scheduler``), real Redis, real HTTP.

* test_worker_kills.py -- a worker SIGKILLed mid-upload to S3, inside finalize, mid-restore-upload
  (mid-transfer to local storage: tests/engine/test_faults.py)
* test_set_worker_kill.py -- a worker SIGKILLed in the middle of a backup set: another finishes the missing shards
* test_qdrant_faults.py -- 503 on create, a download cut, a stalled download, damaged bytes to S3
  (damaged bytes to local storage: tests/engine/test_faults.py)
* test_s3_faults.py -- S3 unreachable mid-upload, the bucket deleted after the backend was saved
* test_redis_restart.py -- Redis restarted mid-transfer; the reaper re-enqueues the job whose message was lost
* test_reaper.py -- the reaper's decisions
* a scheduler leader killed: tests/engine/test_scheduler.py
  (test_two_schedulers_fire_each_tick_once_and_survive_the_leader: the follower takes over, no tick fires twice)
"""
