"""The service face: an HTTP API (FastAPI) and job workers (Huey) over a job store (a folder or S3).

`settings` (the environment), `store` (one home for the job store: records, files, leases), `jobs` (the state
machine), `prepare` (an upload -> a checked dataset), `queue` (Huey and its tasks), `worker` (a training job:
lease, subprocess, heartbeat, cancel; the reaper), `trainer` (the training subprocess), `api` (the endpoints).
"""
