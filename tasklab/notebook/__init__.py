"""The IPython extension: ``%%task`` and ``%tasklab``, and how tasklab's objects display."""
