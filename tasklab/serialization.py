"""Old home of the unpickling helper that results stored before tasklab's packages still name."""

from .code.serialization import load_cell_object

__all__ = ["load_cell_object"]
