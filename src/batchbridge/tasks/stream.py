"""Stream stage: decrypt, validate and transform one file in chunks (validations.stream)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from batchbridge.config import AnyFormatConfig
from batchbridge.connectors.pgp.base import Decryptor, PlaintextStream
from batchbridge.connectors.sources.base import FetchedFile
from batchbridge.tasks.guard import stage_task
from batchbridge.validations.base import FeedSchema, TransformContext, ValidationContext
from batchbridge.validations.stream import StreamedFile, stream_file
from batchbridge.validations.transform import transform_valid_rows
from batchbridge.validations.transformed_rows import RowSink


@stage_task("stream", task_run_name="stream {fetched.name}")
def stream_rows(
    decryptor: Decryptor,
    fetched: FetchedFile,
    fmt: AnyFormatConfig,
    schema: FeedSchema,
    vctx: ValidationContext,
    tctx: TransformContext,
    chunk_bytes: int,
    spill_path: Path,
    sinks: Sequence[RowSink] = (),
    replay: bool = False,
) -> StreamedFile:
    """The file's rows validated and transformed; raises DecryptError or FileRejectedError.

    The transformed rows wait encrypted in `spill_path` (with `replay`, they are made
    again from the file if they are needed again) and are offered to `sinks` as they
    come; the caller closes them.
    """

    def open_plaintext() -> AbstractContextManager[PlaintextStream]:
        return decryptor.open_stream(fetched.local_path)

    transform = functools.partial(transform_valid_rows, schema=schema, ctx=tctx)
    return stream_file(
        open_plaintext,
        fmt,
        schema,
        vctx,
        transform,
        chunk_bytes=chunk_bytes,
        spill_path=spill_path,
        sinks=sinks,
        replay=replay,
    )
