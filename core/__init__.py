"""The bottom layer: the stack config model, the server catalogue and the port table.

Why a package of its own: every other package (cloud_init, components, qpool, lab) reads these, so they
import nothing else of the project; tests/program/test_layers.py keeps it that way.
"""
