"""The composition root: the command line, settings assembly and the wiring of one gateway process.

The only package that knows every layer (`gateway` ingest core, `alerts`, `dashboards`);
none of them imports it.
"""
