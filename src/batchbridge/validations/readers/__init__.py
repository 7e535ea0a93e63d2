"""Readers turn a file's plaintext into all-string rows: delimited text, HL7 v2 batches.

May import validations' base, config and errors.
"""
