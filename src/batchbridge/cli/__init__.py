"""The `batchbridge` command line: one module per command group, the only code that prints.

`print` anywhere else fails `ruff check` (T201); the rest of the package returns text
or logs. Modules here may import anything in the package. Commands that do not run a flow must
stay fast: Prefect and Polars are imported inside the commands that need them (each
such import says so), never at the top of a module in this folder.
"""
