"""tasklab on RQ: queues, the scheduler, transactions, the worker and what it runs for one job,
settling jobs lost with their worker, workflow steps on the worker's side, and events.

Everything here runs in a worker, or writes what a worker reads.
"""
