"""The Ray Data adapter of batch scoring: a datasource of fragments and the pipeline over it.

    read_datasource(FragmentSource) -> map_batches(BlockWriter) -> summary rows to the driver

Ray fuses the read and the map into one task per fragment, so a block is read, checked,
scored and written by the process that read its bytes; only one summary row per fragment
crosses the object store. The streaming executor runs one task per CPU and starts the next
when one ends: memory is bounded by the fragments in flight, whatever the input's size.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
import ray
from ray.data import DataContext
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from sweeps.scoring.output import BlockWriter
from sweeps.scoring.reader import InputPlan, read_fragment

__all__ = ["FragmentSource", "run_pipeline"]

_IN_MEMORY = 2  # decoded Arrow bytes per input byte, roughly (for Ray's size estimate only)


class FragmentSource(Datasource):
    """One read task per fragment of the plan, in plan order."""

    def __init__(self, plan: InputPlan, block_rows: int = 1 << 18) -> None:
        super().__init__()
        self._plan = plan
        self._block_rows = block_rows

    def get_name(self) -> str:
        return "ScoringInput"

    def estimate_inmemory_data_size(self) -> int:
        return self._plan.bytes * _IN_MEMORY

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
    ) -> list[ReadTask]:
        layout = self._plan.layout
        tasks = []
        for fragment in self._plan.fragments:
            path = str(layout.files[fragment.file].path)
            size = fragment.stop - fragment.start if layout.format == "csv" else None
            metadata = BlockMetadata(
                num_rows=fragment.rows,
                size_bytes=size * _IN_MEMORY if size is not None else None,
                exec_stats=None,
                input_files=(path,),
            )
            read = functools.partial(read_fragment, layout, fragment, self._block_rows)
            tasks.append(ReadTask(read, metadata, per_task_row_limit=per_task_row_limit))
        return tasks


@contextmanager
def _scoring_context() -> Iterator[None]:
    """Ray Data settings for one scoring job, put back afterwards (the process may run other datasets).

    No progress bars (the CLI draws its own, in rows/s). A DataError raised in a task (a bad row
    under --bad-rows error, a torn file) reaches the driver as itself, not as Ray Data's generic
    "UDF failed". Ray Data's own lines (start, finish, a failed task's traceback) are hidden
    unless --debug: the job reports a failure itself, in one line.
    """
    context = DataContext.get_current()
    saved = (context.enable_progress_bars, context.print_on_execution_start, context.raise_original_map_exception)
    logger = logging.getLogger("ray.data")
    level = logger.level
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.raise_original_map_exception = True
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
        (
            context.enable_progress_bars,
            context.print_on_execution_start,
            context.raise_original_map_exception,
        ) = saved


def run_pipeline(plan: InputPlan, writer: BlockWriter) -> Iterator[pa.Table]:
    """Run the pipeline; summary tables (`output.SUMMARY_SCHEMA`) arrive as tasks finish."""
    if not plan.fragments:
        return
    with _scoring_context():
        # One block per read task: a smaller count would make Ray split each read's output, which
        # stops it fusing the read with the map (and ships every block through the object store).
        source = ray.data.read_datasource(FragmentSource(plan), override_num_blocks=len(plan.fragments))
        dataset = source.map_batches(writer, batch_format="pyarrow", batch_size=None, zero_copy_batch=True)
        yield from dataset.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0)
