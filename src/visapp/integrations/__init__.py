"""The only place where private or fragile APIs of other tools appear: one module per tool.

git (the command), DVC (its API; `dvc_env` for what DVC tells a stage), GTO, Huey, Ultralytics (with torch)
and zipfile. The rest of the library calls these modules and never reaches into the tools' internals, so an
upgrade of a tool touches one file here (a test checks that no private name of another package is used, nor
one of its classes' private methods overridden, outside this folder).
"""
