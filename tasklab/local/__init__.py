"""What runs on this machine: the embedded Redis, Redis clients, worker processes and their
pool, and a snapshot of a Redis's queues and workers."""
