"""Fleets: convert every model a project file lists (``ptq run``), in parallel, with one report.

``project`` parses and checks the file, ``runner`` converts the models in worker processes (or Ray
tasks), ``report`` renders the fleet's table and report files, ``command`` is the CLI command.
"""
