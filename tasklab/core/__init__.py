"""The task model, the same in the kernel and in a worker: Task, its request, options, retries,
states and signatures, and the App protocol through which a task reaches the side it runs on.

Nothing here talks to Redis or imports RQ.
"""
