"""OpenPGP: decryption engines behind one Decryptor protocol, and encryption of outbound extracts.

base holds the protocol; gnupg (the gpg binary) and pgpy_engine (pgpy, with the message
layers it opens itself in layers) implement it; registry picks one per feed; encrypt
makes outbound extracts; home is the one throwaway gpg home every gpg call runs in;
packets, status and keys read OpenPGP packets, gpg's status lines and key metadata.
May import config, validations, ledger, errors, crashpoints, progress and the connectors'
shared pieces (secrets); never tasks, flows, cli, steward or monitoring.
"""
