"""The registry: model versions as GTO tags, their weights and lineage, and the DVC remote that holds them.

`release` makes versions and promotions, `versions` lists and resolves them and reads their lineage,
`history` reads a released commit's files as data (so old versions stay readable), `remote` checks and
pushes to the S3 remote, `refs` parses what a user types to name a version.
"""
