"""OpenPGP: decryption engines behind one Decryptor protocol (gpg binary, pgpy), encryption
of outbound extracts, key expiry, and the one throwaway gpg home they share.

May import config, ledger and errors; never validations, tasks, flows or the CLI.
"""
