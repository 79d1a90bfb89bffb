"""Bounds on what the web routes accept, so hostile input is refused with a 422 before it reaches the database."""
from typing import Annotated

from fastapi import Path, Query

# SQLite and PostgreSQL's bigint hold signed 64-bit integers; a larger id makes the driver raise (a 500).
MAX_ROW_ID = 2**63 - 1

RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="Row id, a positive 64-bit integer")]

MAX_ZOOM_IN, MAX_ZOOM_OUT = 8, 4
MapZoom = Annotated[int, Query(ge=-MAX_ZOOM_OUT, le=MAX_ZOOM_IN,
                               description="Map zoom steps from the fit that shows everything; positive zooms in")]
