"""Pure statistics for study results: arrays and DataFrames in, dataclasses out, no ORM."""
