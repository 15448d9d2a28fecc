"""The kernel's side of tasks: submitting them, and reading and waiting for their results,
one task at a time or as workflows."""
