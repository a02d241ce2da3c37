"""scenectl: hide one object of a scene, learn to name it from the context alone."""

__version__ = "0.1.0"
