"""Ingestion: a dataset from a ZIP or a folder into `data/raw`, vetted, swapped in whole, recorded by DVC.

`sources` finds the dataset in what the user gives, `archive` vets archives, `merge` appends to the current
version, `swap` puts the new version in place under a journal, `ingest` runs them in order.
"""
