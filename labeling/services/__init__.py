"""Writes. Every state change in the labeling app goes through a function in this package.

Split by area (projects, imports, judgments, assignment, exports) so each module stays small;
callers import from the module that owns the function.
"""
