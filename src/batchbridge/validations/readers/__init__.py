"""Readers turn a file's plaintext into all-string rows: delimited text, HL7 v2 batches.

One public reader per format (`read_delimited`, `read_hl7v2`, chosen in validations'
formats), each with helper modules beside it named after it. May import validations'
base and schemas (the hl7v2 reader fills lab_results columns), config and errors.
"""
