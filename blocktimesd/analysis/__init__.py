"""The dataset read back: block-time reports and validation, computed by DuckDB.

:mod:`.queries` is the DuckDB access (connection, globs, literals, the SQL scripts),
:mod:`.report` the report's tables, :mod:`.validation` the checks, :mod:`.tables`
their renderings for people and scripts, :mod:`.report_html` the page of plots.  The
command lines that drive them are in :mod:`blocktimesd.commands`.
"""
