"""The only place where private or fragile APIs of other tools appear: one module per tool.

git (the command), DVC, GTO, Ultralytics (with torch) and zipfile. The rest of the library calls these
modules and never reaches into the tools' internals, so an upgrade of a tool touches one file here (a test
checks that no private name of another package is used outside this folder).
"""
