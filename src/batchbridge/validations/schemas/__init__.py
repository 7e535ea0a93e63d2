"""One module per feed kind, each with its `SCHEMA` (found by module name, no list to edit).

May import validations' checks, rules and base, config and errors.
"""
