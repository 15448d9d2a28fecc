"""Task code as tasklab ships it: cell versions, their store in Redis, loading them in a
worker, reading a cell before it runs, shipping script tasks, and the serializer that keeps
cell classes by reference.
"""
