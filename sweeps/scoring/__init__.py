"""Batch scoring on Ray Data: `sweeps predict` for files of any size.

Modules: `reader` (find, check and cut the input into fragments; read one; no Ray), `batch`
(check a block with serving's protocol rules, score it, count its rows; no Ray), `output`
(part files, the errors file, the commit), `runs` (the `batch-scoring` MLflow run) and `job`
(the Ray Data pipeline that ties them together). Nothing is imported here, so Ray workers load
only the light modules their tasks need.
"""
