"""ipywidgets views of a lab: the live monitor and the live state badge of a result.

Each is given the lab it shows; neither looks one up.
"""
